from __future__ import annotations

import numpy as np
import pytest
from edge_opt.errors import ExportError
from edge_opt.export.validation import check_parity
from edge_opt.formats.evaluation import parity
from edge_opt.options import Precision

pytestmark = pytest.mark.unit

REF = np.random.default_rng(0).standard_normal((200, 10)).astype(np.float32) * 5


def test_identical_outputs_pass_every_gate() -> None:
    for precision, relation in ((Precision.FP32, "same"), (Precision.FP16, "same"), (Precision.INT8, "quantized")):
        check_parity("x", precision, relation, parity(REF, REF.copy()), REF)


def test_non_finite_outputs_are_refused_even_when_lenient() -> None:
    bad = REF.copy()
    bad[3, 2] = np.inf
    with pytest.raises(ExportError, match="non-finite"):
        check_parity("int8 onnx", Precision.INT8, "quantized", parity(REF, bad), REF, random_weights=True)


def test_random_weights_waive_top1_but_not_the_error_bounds() -> None:
    near_tied = np.random.default_rng(1).standard_normal((200, 10)).astype(np.float32) * 1e-3 + 1.0
    rounded = near_tied.astype(np.float16).astype(np.float32)  # FP16 reorders near-tied logits
    assert parity(near_tied, rounded).top1_agreement < 0.9
    check_parity("fp16", Precision.FP16, "same", parity(near_tied, rounded), near_tied, random_weights=True)
    with pytest.raises(ExportError, match="top-1"):
        check_parity("fp16", Precision.FP16, "same", parity(near_tied, rounded), near_tied)
    with pytest.raises(ExportError, match="cosine"):
        check_parity("fp16", Precision.FP16, "same", parity(REF, -REF), REF, random_weights=True)


def test_disagreement_and_error_bounds_are_named() -> None:
    flipped = REF[:, ::-1].copy()  # a wrong branch: same values, wrong classes
    with pytest.raises(ExportError, match=r"fp32 onnx refused.*top-1 agreement.*cosine.*nothing was written"):
        check_parity("fp32 onnx", Precision.FP32, "same", parity(REF, flipped), REF)
    nudged = REF + 0.02  # fine for FP16, too much for FP32
    check_parity("fp16", Precision.FP16, "same", parity(REF, nudged), REF)
    with pytest.raises(ExportError, match="max error"):
        check_parity("fp32", Precision.FP32, "same", parity(REF, nudged), REF)
