"""Other models, parity refusal and atomicity, through the pipeline in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_opt.config import parse_config
from edge_opt.errors import ConfigError, ExportError
from edge_opt.export.pipeline import run_export

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(data_root: Path, **extra: object) -> object:
    base = {
        "data": {"root": str(data_root), "download": False, "eval_samples": 256, "batch_size": 32},
        "export": {"parity_samples": 128},
        "calibration_batches": 2,
        "benchmark": {"iterations": 2, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
    }
    base.update(extra)
    return parse_config(base)


@pytest.mark.parametrize("target", ["x86_64", "arm64"])
@pytest.mark.cpus
def test_mobilenet_v2_small_input_all_precisions(tmp_path: Path, data_root: Path, target: str) -> None:
    config = _config(data_root, model={"name": "mobilenet_v2", "input_size": [32, 32]}, target=target)
    report = run_export(config, tmp_path)
    rows = {(r.precision.value, r.format.value): r for r in report.rows}
    assert set(rows) == {(p, f) for p in ("fp32", "fp16", "int8") for f in ("torchscript", "onnx")}
    assert all(r.written for r in rows.values())
    assert rows[("int8", "onnx")].size_ratio < 0.35
    assert rows[("int8", "torchscript")].parity_vs_source.top1_agreement >= 0.99
    assert any("random weights" in n for n in report.notes)
    manifest = (tmp_path / "mobilenet_v2-int8-onnx" / "manifest.json").read_text()
    expected_act = "QInt8" if target == "arm64" else "QUInt8"
    assert f'"activation_type": "{expected_act}"' in manifest


def test_export_that_disagrees_with_its_source_is_refused(tmp_path: Path, data_root: Path) -> None:
    # Tracing bakes the batch-size-1 branch into the graph; batched test images then disagree with eager.
    config = _config(data_root, model={"name": "edge_test_models:data_dependent"}, precisions=["fp32"], formats=["torchscript"])
    with pytest.raises(ExportError, match=r"refused.*top-1 agreement"):
        run_export(config, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no staging left


def test_user_factory_model_exports(tmp_path: Path, data_root: Path) -> None:
    config = _config(data_root, model={"name": "edge_test_models:tiny"}, precisions=["int8"], formats=["onnx"])
    report = run_export(config, tmp_path)
    assert [r.written for r in report.rows] == [False, True]  # FP32 baseline measured, INT8 written
    assert (tmp_path / "edge_test_models.tiny-int8-onnx" / "model.onnx").is_file()


def test_pick_candidates_refused_by_their_gates_are_left_out_with_the_reason(tmp_path: Path, data_root: Path) -> None:
    # --pick builds every candidate: one refused by its gates (logits in the millions overflow float16) is left out
    # and named, the others are written; a FP32 baseline refused leaves out its whole format (the data-dependent
    # model's TorchScript trace); a mistake of the user's (a --keep-float name matching no layer) still stops it.
    config = _config(
        data_root, model={"name": "edge_test_models:fp16_overflow"}, precisions=["fp32", "fp16", "int8"], formats=["onnx"]
    )
    report = run_export(config, tmp_path / "a", keep_going=True)
    assert [(r.precision.value, r.written) for r in report.rows] == [("fp32", True), ("int8", True)]
    assert list(report.refused) == ["edge_test_models.fp16_overflow-fp16-onnx"]
    assert "non-finite outputs" in report.refused["edge_test_models.fp16_overflow-fp16-onnx"]
    assert "leave fp16 out of --precision" in report.refused["edge_test_models.fp16_overflow-fp16-onnx"]
    assert not (tmp_path / "a" / "edge_test_models.fp16_overflow-fp16-onnx").exists()

    dependent = _config(
        data_root, model={"name": "edge_test_models:data_dependent"}, precisions=["fp32", "int8"], formats=["torchscript"]
    )
    with pytest.raises(ExportError, match="every artifact was refused"):
        run_export(dependent, tmp_path / "b", keep_going=True)

    typo = _config(
        data_root,
        model={"name": "edge_test_models:tiny"},
        precisions=["fp32", "int8"],
        formats=["onnx"],
        quantization={"keep_float": ["no_such_layer"]},
    )
    with pytest.raises(ConfigError, match="no_such_layer"):
        run_export(typo, tmp_path / "c", keep_going=True)
