"""The main job end to end, as a user runs it: ``edge-export --precision all`` on SmallCNN / Fashion-MNIST.

One module-scoped run (the CLI in a fresh interpreter) feeds every assertion below; the accuracy and size bounds
are the ones the README promises (and the reference guide's figures they improve on).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from conftest import REPO, parse_json_result, run_cli
from edge_opt.export.artifact import read_manifest, sha256_file

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cpus]


@pytest.fixture(scope="module")
def export_all(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export") / "artifacts"
    proc = run_cli(["--precision", "all", "--format", "both", "--out", str(out), "--json", "-q"], cli_env)
    assert proc.returncode == 0, proc.stderr
    return out, parse_json_result(proc.stdout)


def _rows(result: dict) -> dict[tuple[str, str], dict]:
    return {(a["precision"], a["format"]): a for a in result["data"]["artifacts"]}


def test_envelope_and_every_artifact_written(export_all: tuple[Path, dict]) -> None:
    out, result = export_all
    assert (result["edge_result_version"], result["command"], result["status"], result["exit_code"]) == ("1", "export", "ok", 0)
    rows = _rows(result)
    assert set(rows) == {(p, f) for p in ("fp32", "fp16", "int8") for f in ("torchscript", "onnx")}
    assert all(r["written"] for r in rows.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"smallcnn-{p}-{f}" for p, f in rows] + ["summary.json", "evalsets"]
    )  # no staging folders left behind
    # Evaluation sets for devices: the test images once, and the host's outputs for each artifact (by content).
    manifests = [json.loads((Path(r["path"]) / "manifest.json").read_text()) for r in rows.values()]
    records = [m["host_metrics"]["device_evaluation"] for m in manifests]
    expected = {r["eval_set_sha256"] for r in records} | {r["reference_sha256"] for r in records}
    assert len({r["eval_set_sha256"] for r in records}) == 1 and len(expected) >= 3
    assert {p.name for p in (out / "evalsets").iterdir() if (p / "manifest.json").is_file()} == expected
    assert json.loads((out / "summary.json").read_text()) == result["data"]


def test_manifests_match_their_files(export_all: tuple[Path, dict]) -> None:
    _, result = export_all
    for row in result["data"]["artifacts"]:
        folder = Path(row["path"])
        manifest = read_manifest(folder)  # checks schema and sha256
        assert manifest["file"]["sha256"] == sha256_file(folder / manifest["file"]["name"]) == row["sha256"]
        assert manifest["precision"] == row["precision"] and manifest["format"] == row["format"]
        assert manifest["input"]["shape"] == ["batch", 1, 28, 28]
        assert manifest["preprocessing"]["mean"] == pytest.approx(0.2860)
        assert manifest["versions"]["torch"].startswith("2.14.1")
        if row["precision"] == "int8":
            assert manifest["quantization"]["calibration_batches"] == 8


def test_accuracy_and_size_meet_the_guide(export_all: tuple[Path, dict]) -> None:
    _, result = export_all
    rows = _rows(result)
    for fmt in ("torchscript", "onnx"):
        fp32, fp16, int8 = (rows[(p, fmt)] for p in ("fp32", "fp16", "int8"))
        assert fp32["accuracy"] >= 0.890
        assert fp32["accuracy"] - int8["accuracy"] <= 0.006, fmt
        assert abs(fp32["accuracy"] - fp16["accuracy"]) <= 0.002, fmt
        assert int8["size_ratio_to_fp32"] <= 0.30
        assert fp16["size_ratio_to_fp32"] <= 0.52
        assert 2.80e6 <= fp32["size_bytes"] <= 2.90e6  # the guide's 2.85 MB
        assert int8["parity_vs_fp32"]["top1_agreement"] >= 0.95


def test_torchscript_loads_with_plain_torch(export_all: tuple[Path, dict]) -> None:
    out, _ = export_all
    module = torch.jit.load(str(out / "smallcnn-int8-torchscript" / "model.pt"))
    torch.backends.quantized.engine = read_manifest(out / "smallcnn-int8-torchscript")["target"]["torch_engine"]
    assert module(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_onnx_has_dynamic_batch_and_int8_is_qdq(export_all: tuple[Path, dict]) -> None:
    out, _ = export_all
    session = ort.InferenceSession(str(out / "smallcnn-int8-onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "smallcnn-int8-onnx" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plain_onnxruntime_reproduces_claimed_accuracy(export_all: tuple[Path, dict], data_root: Path, precision: str) -> None:
    # A consumer with only numpy + onnxruntime and the manifest, no edge_opt and no torch.
    out, _ = export_all
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "onnx_accuracy_plain.py"),
            str(out / f"smallcnn-{precision}-onnx"),
            str(data_root),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    assert report["samples"] == 10_000
    assert report["accuracy"] == pytest.approx(report["claimed"], abs=0.001)
