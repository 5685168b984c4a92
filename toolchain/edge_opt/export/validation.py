"""Validation of exported artifacts against the models they came from.

Parity gates (``PARITY_GATES``) catch broken exports (a traced branch that is wrong for batches, a lost layer,
overflow), not quantization noise: an artifact is refused when its outputs are not finite, when its top-1
agreement with its source falls below ``min_top1``, when its mean cosine similarity falls below ``min_cosine``,
or when its largest logit error, relative to the largest reference logit, exceeds ``max_rel_error``. Top-1
alone is not enough: random-init models have near-tied logits that FP16 rounding legitimately reorders. The
source of an ONNX INT8 artifact is the FP32 model (ONNX Runtime quantizes the FP32 graph), so it has no
error-bound gate, only agreement and cosine; for random-init models (which quantize badly by nature: 0.46 top-1
agreement for MobileNetV2 here) that comparison is reported, not enforced, and their FP16 / INT8 artifacts are
not held to top-1 agreement (cosine and error bounds still apply). Accuracy is reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_opt.errors import ExportError
from edge_opt.formats.evaluation import Parity
from edge_opt.options import Precision


@dataclass(frozen=True)
class Gate:
    min_top1: float
    max_rel_error: float | None = None
    min_cosine: float | None = None


PARITY_GATES: dict[tuple[Precision, str], Gate] = {
    (Precision.FP32, "same"): Gate(min_top1=0.999, max_rel_error=1e-3, min_cosine=0.9999),
    (Precision.FP16, "same"): Gate(min_top1=0.90, max_rel_error=0.1, min_cosine=0.99),
    (Precision.INT8, "same"): Gate(min_top1=0.98, max_rel_error=0.1, min_cosine=0.99),
    (Precision.INT8, "quantized"): Gate(min_top1=0.90, min_cosine=0.95),
}


def check_parity(
    label: str,
    precision: Precision,
    relation: str,
    p: Parity,
    ref: np.ndarray,
    *,
    random_weights: bool = False,
    classifier: bool = True,
) -> None:
    """Raise ExportError naming every failed bound; ``random_weights`` relaxes what random weights cannot meet.

    Random weights give near-tied logits: reduced precision legitimately reorders them, so top-1 agreement is not
    required of their FP16 / INT8 artifacts (cosine and error bounds still are), and their INT8 ONNX artifact,
    compared with FP32, is only checked for finite outputs. A model whose output is not class scores
    (``classifier=False``: an embedding, a feature map) has no top-1 to agree on: cosine and error bounds apply.
    """
    gate = PARITY_GATES[(precision, relation)]
    if random_weights and relation == "quantized":
        gate = Gate(min_top1=0.0)
    elif random_weights and precision is not Precision.FP32:
        gate = Gate(min_top1=0.0, max_rel_error=gate.max_rel_error, min_cosine=gate.min_cosine)
    if not classifier:
        gate = Gate(min_top1=0.0, max_rel_error=gate.max_rel_error, min_cosine=gate.min_cosine)
    scale = max(1e-6, float(np.abs(ref).max()))
    problems = []
    if not p.finite:
        problems.append("non-finite outputs")
    if p.top1_agreement < gate.min_top1:
        problems.append(f"top-1 agreement {p.top1_agreement:.4f} < {gate.min_top1}")
    if gate.max_rel_error is not None and p.max_abs_error / scale > gate.max_rel_error:
        problems.append(f"max error {p.max_abs_error:.3g} > {gate.max_rel_error} x {scale:.3g}")
    if gate.min_cosine is not None and p.mean_cosine < gate.min_cosine:
        problems.append(f"cosine {p.mean_cosine:.4f} < {gate.min_cosine}")
    if problems:
        if precision is Precision.INT8:
            fix = "try more --calibration-batches, another --target, or keep sensitive layers in float"
        elif precision is Precision.FP16:
            fix = "the model overflows or underflows in float16 (large activations?): leave fp16 out of --precision"
        else:
            fix = (
                "the exported graph computes something else than the model (a Python branch on a shape or value "
                "that tracing fixed?): leave this format out of --format"
            )
        raise ExportError(
            f"{label} refused, it does not match its source model on {p.samples} test images ({'; '.join(problems)}); "
            f"nothing was written. {fix[0].upper()}{fix[1:]}"
        )
