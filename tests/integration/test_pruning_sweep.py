"""Pruning through the real pipeline, and the sweep's outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, parse_json_result, run_cli
from edge_opt.config import parse_config
from edge_opt.export.artifact import read_manifest
from edge_opt.sweep.plots import write_outputs
from edge_opt.sweep.runs import run_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cpus]


def test_pruned_int8_smallcnn_is_small_and_accurate(tmp_path: Path, cli_env: dict[str, str], data_root: Path) -> None:
    # The acceptance point: pruned INT8 (ONNX and TorchScript) ≤ 0.25 MB and ≥ 86.3%, checked with the plain runtimes.
    out = tmp_path / "art"
    proc = run_cli(["--precision", "int8", "--prune", "0.5", "--out", str(out), "--json", "-q"], cli_env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["format"]: r for r in parse_json_result(proc.stdout)["data"]["artifacts"] if r["written"]}
    assert set(rows) == {"onnx", "torchscript"}
    for row in rows.values():
        assert row["size_bytes"] <= 0.25e6
        assert row["accuracy"] >= 0.863
        manifest = read_manifest(Path(row["path"]))
        assert manifest["pruning"]["amount"] == 0.5 and manifest["pruning"]["method"] == "structured"
        assert manifest["pruning"]["parameters_after"] < 0.3 * manifest["pruning"]["parameters_before"]
    plain = subprocess.run(
        [sys.executable, str(REPO / "examples" / "onnx_accuracy_plain.py"), rows["onnx"]["path"], str(data_root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert json.loads(plain.stdout)["accuracy"] >= 0.863
    from edge_opt.data import Preprocessing, load_fashion_mnist

    module = torch.jit.load(str(Path(rows["torchscript"]["path"]) / "model.pt"))
    torch.backends.quantized.engine = read_manifest(Path(rows["torchscript"]["path"]))["target"]["torch_engine"]
    test = load_fashion_mnist(data_root, download=False).test
    correct = sum(int((module(x).argmax(1) == y).sum()) for x, y in test.batches(Preprocessing(), 500))
    assert correct / len(test) >= 0.863


def test_sweep_writes_table_csv_json_and_plot(tmp_path: Path, data_root: Path) -> None:
    config = parse_config(
        {
            "model": {"name": "edge_test_models:tiny"},
            "precisions": ["fp32", "int8"],
            "formats": ["onnx"],
            "data": {"root": str(data_root), "download": False, "eval_samples": 256, "batch_size": 32},
            "export": {"parity_samples": 128},
            "calibration_batches": 2,
            "benchmark": {"iterations": 2, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
        }
    )
    rows = run_sweep(config, tmp_path, (0.0, 0.5))
    paths = write_outputs(rows, tmp_path)
    assert {(r["pruning"], r["precision"]) for r in rows} == {(a, p) for a in (0.0, 0.5) for p in ("fp32", "int8")}
    pruned = next(r for r in rows if r["pruning"] == 0.5 and r["precision"] == "fp32")
    unpruned = next(r for r in rows if r["pruning"] == 0.0 and r["precision"] == "fp32")
    assert pruned["size_bytes"] < 0.6 * unpruned["size_bytes"]
    assert pruned["accuracy_delta_to_unpruned_fp32"] == pytest.approx(pruned["accuracy"] - unpruned["accuracy"])
    with paths["csv"].open() as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    assert len(json.loads(paths["json"].read_text())) == len(rows)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "p50" / "edge_test_models.tiny-p50-int8-onnx" / "manifest.json").is_file()
