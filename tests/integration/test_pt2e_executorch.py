"""PT2E INT8 and the executorch format: real torch.export, real lowering to XNNPACK, the real ExecuTorch runtime."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from edge_opt.config import parse_config
from edge_opt.errors import ExportError, QuantizeError
from edge_opt.export.artifact import read_manifest
from edge_opt.export.pipeline import run_export
from edge_opt.quant.pt2e import to_int8_pt2e
from edge_test_models import data_dependent, tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("hang_guard")]


def _config(data_root: Path, **extra: object) -> object:
    base = {
        "model": {"name": "edge_test_models:tiny"},
        "data": {"root": str(data_root), "download": False, "eval_samples": 512, "batch_size": 32},
        "export": {"parity_samples": 256},
        "calibration_batches": 2,
        "formats": ["executorch"],
        "benchmark": {"iterations": 2, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
    }
    base.update(extra)
    return parse_config(base)


def _read_idx(path: Path) -> np.ndarray:
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def _raw_test_split(data_root: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    raw = data_root / "FashionMNIST" / "raw"

    def find(stem: str) -> Path:
        return next(p for p in (raw / stem, raw / f"{stem}.gz") if p.exists())

    return _read_idx(find("t10k-images-idx3-ubyte"))[:n], _read_idx(find("t10k-labels-idx1-ubyte"))[:n].astype(np.int64)


def test_int8_executorch_artifact_is_validated_delegated_and_reproducible(tmp_path: Path, data_root: Path) -> None:
    # setup / execute: INT8 by PT2E into a .pte (the FP32 .pte is built as the baseline, not written)
    report = run_export(_config(data_root, precisions=["int8"]), tmp_path)
    # assert: the table
    rows = {(r.precision.value, r.format.value): r for r in report.rows}
    assert set(rows) == {("fp32", "executorch"), ("int8", "executorch")}
    int8 = rows[("int8", "executorch")]
    assert int8.written and not rows[("fp32", "executorch")].written
    assert int8.parity_vs_source.top1_agreement >= 0.98
    assert 0.15 < int8.size_ratio < 0.45  # int8 weights
    # the manifest: runtime, delegate, delegation, quantization engine, checked sha256
    folder = tmp_path / "edge_test_models.tiny-int8-executorch"
    manifest = read_manifest(folder)
    assert manifest["runtime"] == "executorch" and manifest["file"]["name"] == "model.pte"
    assert manifest["executorch"]["delegate"] == "XnnpackBackend"
    assert manifest["executorch"]["runtime_version"] == manifest["versions"]["executorch"]
    # XNNPACK takes every operator but the flatten between conv and linear (a view of the dynamic batch)
    assert set(manifest["executorch"]["delegation"]["not_delegated"]) <= {"aten_view_copy_default"}
    assert manifest["executorch"]["delegation"]["fraction_delegated"] > 0.9
    assert manifest["quantization"]["quantizer"] == "XNNPACKQuantizer"
    # a consumer with the plain ExecuTorch runtime, raw test images and the manifest's preprocessing
    # reproduces the recorded accuracy exactly
    from executorch.runtime import Runtime

    n = manifest["host_metrics"]["accuracy_samples"]
    images, labels = _raw_test_split(data_root, n)
    p = manifest["preprocessing"]
    x = ((images.astype(np.float32)[:, None] * np.float32(p["scale"])) - np.float32(p["mean"])) / np.float32(p["std"])
    method = Runtime.get().load_program(folder / "model.pte").load_method("forward")
    batch = manifest["executorch"]["max_batch"]
    logits = np.concatenate(
        [method.execute([torch.from_numpy(x[i : i + batch])])[0].numpy() for i in range(0, n, batch)]
    )
    assert float((logits.argmax(1) == labels).mean()) == manifest["host_metrics"]["accuracy"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [a["format"] for a in summary["artifacts"]] == ["executorch", "executorch"]


def test_fp16_executorch_takes_half_inputs(tmp_path: Path, data_root: Path) -> None:
    report = run_export(_config(data_root, precisions=["fp16"]), tmp_path)
    fp16 = next(r for r in report.rows if r.precision.value == "fp16")
    assert fp16.written and 0.4 < fp16.size_ratio < 0.6  # half the weights, plus the program's fixed overhead
    manifest = read_manifest(tmp_path / "edge_test_models.tiny-fp16-executorch")
    assert manifest["input"]["dtype"] == "float16"
    assert set(manifest["executorch"]["delegation"]["not_delegated"]) <= {"aten_view_copy_default"}
    assert manifest["executorch"]["delegation"]["operators_delegated"] >= 4  # conv, relu, max pool, linear


def test_pt2e_keep_float_leaves_the_named_layer_unquantized() -> None:
    # setup
    torch.manual_seed(0)
    model = tiny().eval()
    batches = [torch.randn(8, 1, 28, 28) for _ in range(2)]

    def quantized_weights(m: torch.nn.Module) -> set[str]:
        """Which float ops take a dequantized weight: conv and/or linear."""
        found = set()
        for node in m.graph.nodes:
            if node.op == "call_function" and node.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
                weight = node.args[1]
                if getattr(weight, "op", "") == "call_function" and "dequantize" in str(weight.target):
                    found.add("conv" if node.target is torch.ops.aten.conv2d.default else "fc")
        return found

    # execute
    everything = to_int8_pt2e(model, batches, 2, max_batch=8)
    kept = to_int8_pt2e(model, batches, 2, keep_float=["fc"], max_batch=8)
    # assert
    assert quantized_weights(everything) == {"conv", "fc"}
    assert quantized_weights(kept) == {"conv"}
    x = batches[0]
    assert torch.allclose(kept(x), everything(x), atol=0.5)  # both still the same classifier, roughly


def test_pt2e_errors_name_the_fix() -> None:
    batches = [torch.randn(4, 1, 28, 28)]
    with pytest.raises(QuantizeError, match=r"names no module.*conv"):
        to_int8_pt2e(tiny(), batches, 1, keep_float=["nope"])
    with pytest.raises(QuantizeError, match=r"torch\.export cannot export this model.*torch\.cond"):
        to_int8_pt2e(data_dependent(), batches, 1)
    with pytest.raises(QuantizeError, match="only 1"):
        to_int8_pt2e(tiny(), batches, 2)


def test_unexportable_model_is_refused_with_nothing_written(tmp_path: Path, data_root: Path) -> None:
    config = _config(data_root, model={"name": "edge_test_models:data_dependent"}, precisions=["fp32"])
    with pytest.raises(ExportError, match=r"torch\.export cannot export.*leave executorch out of --format"):
        run_export(config, tmp_path)
    assert not any(p.name.startswith("edge_test_models") or p.name.startswith(".staging") for p in tmp_path.iterdir())
