"""The per-layer sensitivity report and keeping layers in float, on a real (small, trained) model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from edge_opt.config import TrainSection, parse_config
from edge_opt.data import Preprocessing, load_fashion_mnist
from edge_opt.export.pipeline import run_export
from edge_opt.formats.onnx import export_onnx
from edge_opt.model.models import SmallCNN
from edge_opt.model.train import train_classifier
from edge_opt.quant.ort import quantize_onnx
from edge_opt.quant.sensitivity import fx_sensitivity, onnx_nodes_for_modules, onnx_sensitivity, quantizable_modules
from edge_opt.sweep.runs import calibration_sweep
from edge_opt.targets import PROFILES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(data_root: Path) -> tuple[SmallCNN, list[torch.Tensor]]:
    data = load_fashion_mnist(data_root, download=False)
    model = SmallCNN()
    small = data.train.head(6000)
    train_classifier(model, small, Preprocessing(), TrainSection(epochs=1, batch_size=64))
    calibration = [x for x, _ in data.train.batches(Preprocessing(), 64, shuffle=True, limit=4)]
    return model.eval(), calibration


def test_fx_sensitivity_ranks_every_layer(trained) -> None:
    model, calibration = trained
    base, layers = fx_sensitivity(model, calibration, calibration[0], "x86")
    assert sorted(layer.name for layer in layers) == sorted(quantizable_modules(model))
    assert 10 < base < 80  # INT8 logits are close to FP32 but not identical
    assert [layer.gain_db for layer in layers] == sorted((layer.gain_db for layer in layers), reverse=True)
    assert layers[0].gain_db > 0  # keeping the most sensitive layer in float helps


def test_onnx_sensitivity_names_weight_layers(trained, tmp_path: Path) -> None:
    model, calibration = trained
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, calibration[0][:1], fp32, opset=17)
    batches = [x.numpy() for x in calibration]
    quantize_onnx(fp32, int8, batches, PROFILES["x86_64"])
    layers = onnx_sensitivity(fp32, int8, batches[:1])
    ops = {n.name: n.op_type for n in onnx.load(str(fp32)).graph.node}
    assert layers and all(ops[layer.name] in ("Conv", "Gemm", "MatMul") for layer in layers)
    assert [layer.sqnr_db for layer in layers] == sorted(layer.sqnr_db for layer in layers)
    assert onnx_nodes_for_modules(fp32, ["features.0", "classifier.3"]) == [
        "/features/features.0/Conv",
        "/classifier/classifier.3/Gemm",
    ]


def test_keep_float_reaches_both_formats(trained, tmp_path: Path, data_root: Path) -> None:
    model, _ = trained
    checkpoint = tmp_path / "w.pt"
    torch.save(model.state_dict(), checkpoint)
    config = parse_config(
        {
            "model": {"checkpoint": str(checkpoint)},
            "precisions": ["int8"],
            "quantization": {"keep_float": ["features.0"]},
            "data": {"root": str(data_root), "download": False, "eval_samples": 500},
            "calibration_batches": 2,
            "benchmark": {"iterations": 2, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
        }
    )
    report = run_export(config, tmp_path / "art")
    onnx_model = onnx.load(str(tmp_path / "art" / "smallcnn-int8-onnx" / "model.onnx"))
    conv_inputs = [n.input[0] for n in onnx_model.graph.node if n.name == "/features/features.0/Conv"]
    assert conv_inputs == ["input"]  # the first conv reads the float input directly: not quantized
    row = next(r for r in report.rows if r.format.value == "onnx" and r.written)
    assert row.quantization is not None and row.quantization["nodes_excluded"] == ["/features/features.0/Conv"]
    ts = next(r for r in report.rows if r.format.value == "torchscript" and r.written)
    assert ts.quantization["modules_kept_float"] == ["features.0"]


def test_calibration_sweep_reports_time_and_accuracy(trained, tmp_path: Path, data_root: Path) -> None:
    model, _ = trained
    checkpoint = tmp_path / "w.pt"
    torch.save(model.state_dict(), checkpoint)
    config = parse_config(
        {
            "model": {"checkpoint": str(checkpoint)},
            "formats": ["onnx"],
            "data": {"root": str(data_root), "download": False, "eval_samples": 500},
            "benchmark": {"iterations": 2, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
        }
    )
    rows = calibration_sweep(config, tmp_path, (1, 4))
    assert [r["calibration_batches"] for r in rows] == [1, 4]
    assert all(r["calibration_seconds"] > 0 and 0.5 < r["accuracy"] <= 1 for r in rows)
    assert rows[1]["images"] == 4 * 64
    assert np.isfinite([r["accuracy_delta_to_fp32"] for r in rows]).all()
