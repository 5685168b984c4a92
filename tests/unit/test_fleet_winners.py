"""Per-device winners of a collection and the device × candidate heatmap."""

from __future__ import annotations

import numpy as np
import pytest
from edge_opt.fleet.winners import device_winners, heatmap_png, winners_table

pytestmark = pytest.mark.unit


def _row(device: str, artifact: str, precision: str, p50: float, accuracy: float, size: int,
         history: list[float] | None = None) -> dict:
    return {
        "device": device, "model": "mobilenet_v2", "artifact": artifact, "precision": precision, "state": "SUCCEEDED",
        "p50_ms": p50, "host_accuracy": accuracy, "size_bytes": size, "history_ms": history or [],
    }


def _fleet() -> list[dict]:
    rows = []
    # A VNNI x86: ONNX Runtime INT8 is fastest. An AVX2-only x86: ExecuTorch FP32 is. A Pi: ExecuTorch INT8.
    speeds = {
        "x86-vnni": {"fp32-onnx": 6.0, "int8-onnx": 3.3, "fp32-executorch": 4.5, "int8-executorch": 4.0},
        "x86-avx2": {"fp32-onnx": 9.4, "int8-onnx": 6.5, "fp32-executorch": 5.2, "int8-executorch": 5.8},
        "pi5": {"fp32-onnx": 40.0, "int8-onnx": 30.0, "fp32-executorch": 25.0, "int8-executorch": 15.0},
    }
    sizes = {"fp32-onnx": 8.9e6, "int8-onnx": 2.6e6, "fp32-executorch": 8.9e6, "int8-executorch": 2.5e6}
    for device, by_artifact in speeds.items():
        for artifact, p50 in by_artifact.items():
            precision = artifact.split("-")[0]
            rows.append(_row(device, artifact, precision, p50, 0.920 if precision == "fp32" else 0.918, int(sizes[artifact])))
    rows.append(_row("pi5", "int8-lossy", "int8", 10.0, 0.80, 1_000_000))  # fastest, but 12 points below FP32
    return rows


def test_each_device_gets_its_own_winner() -> None:
    # No history: one run each, so the tie gap alone separates (and the table says so).
    picks = device_winners(_fleet())
    table = winners_table(picks)
    winners = {w["device"]: w["winner"] for w in table}
    assert winners == {"x86-vnni": "int8-onnx", "x86-avx2": "fp32-executorch", "pi5": "int8-executorch"}
    assert all("no history: the tie gap alone" in w["spread"] for w in table)
    pi = picks[("pi5", "mobilenet_v2")]
    assert next(v for v in pi.verdicts if v.candidate.name == "int8-lossy").status == "over budget"


def test_a_devices_history_decides_what_ties() -> None:
    # x86-avx2's FP32 ExecuTorch is 11.5% faster than INT8 ExecuTorch in this collection. A device whose past runs
    # of these artifacts moved 15% from run to run cannot tell them apart: the smaller INT8 file wins the tie; a
    # device whose runs agree to 1% can.
    rng = np.random.default_rng(0)
    for noise, winner, decision in ((0.15, "int8-executorch", "tie: "), (0.01, "fp32-executorch", "separated")):
        rows = [
            {**r, "history_ms": [float(v) for v in r["p50_ms"] * np.exp(rng.normal(0.0, noise, 8))]}
            if r["device"] == "x86-avx2" else r
            for r in _fleet()
        ]
        table = {w["device"]: w for w in winners_table(device_winners(rows))}
        assert table["x86-avx2"]["winner"] == winner and table["x86-avx2"]["decision"].startswith(decision)
        assert "history of 36 runs of these artifacts" in table["x86-avx2"]["spread"]


def test_heatmap_has_one_cell_per_device_and_candidate() -> None:
    rows = _fleet()
    fig = heatmap_png(rows, device_winners(rows))
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 3 * 4 + 1  # every measured (device, artifact); pi5 has the extra lossy one
    assert sum(t.startswith("★") for t in texts) == 3  # one winner per device
    assert "★1.00" in texts  # a winner that is also the fastest
    dashed = [p for p in ax.patches if p.get_linestyle() == "--"]
    assert len(dashed) == 0  # no ties without history here: 5% apart or more everywhere
    assert [t.get_text() for t in ax.get_yticklabels()] == ["pi5", "x86-avx2", "x86-vnni"]
