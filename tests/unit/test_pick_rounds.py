"""The device pick's rounds against a simulated device: adaptive rounds, budgets, disturbed runs, the evidence."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from agent_helpers import write_artifact
from edge_opt.device.pick_runs import pick_on_device

pytestmark = pytest.mark.unit


class SimulatedDevice:
    """An agent's client whose runs take ``seconds`` each on a fake clock; each run's median is ``median`` times
    log-normal noise of sd ``noise``, and ``disturbed(name, n)`` says whether its n-th run is disturbed."""

    def __init__(
        self,
        folders: dict[str, Path],
        medians: dict[str, float],
        noise: dict[str, float],
        *,
        seconds: float = 2.0,
        disturbed: Callable[[str, int], bool] = lambda name, n: False,
        seed: int = 0,
    ) -> None:
        self.names = {json.loads((f / "manifest.json").read_text())["file"]["sha256"]: n for n, f in folders.items()}
        self.medians, self.noise, self.seconds, self.disturbed = medians, noise, seconds, disturbed
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        self.runs: list[str] = []

    def clock(self) -> float:
        return self.now

    def info(self) -> dict[str, Any]:
        return {"hostname": "sim", "arch": "x86_64", "cpu_model": "simulated", "runtimes": [{"name": "onnxruntime"}]}

    def push(self, folder: Path) -> Any:
        return SimpleNamespace(sha256=json.loads((folder / "manifest.json").read_text())["file"]["sha256"])

    def bench(self, sha256: str, settings: dict[str, Any], **evaluate: str) -> Iterator[dict[str, Any]]:
        name = self.names[sha256]
        self.runs.append(name)
        self.now += self.seconds
        p50 = self.medians[name] * float(np.exp(self.rng.normal(0.0, self.noise[name])))
        busy = self.disturbed(name, self.runs.count(name))
        warnings = ["other processes used 1.30 CPU cores on average during the run"] if busy else []
        yield {"result": {"latency": {"p50_ms": p50, "count": 1000}, "disturbed": busy, "warnings": warnings}}


def _setup(tmp_path: Path, medians: dict[str, float], noise: float | dict[str, float], **kwargs: Any):
    folders = {}
    for i, name in enumerate(medians):
        # sizes grow with the order given: the first is the smallest file
        folders[name] = write_artifact(tmp_path / name, bytes([i]) * (1000 * (i + 1)), accuracy=0.9)
    spreads = noise if isinstance(noise, dict) else dict.fromkeys(medians, noise)
    return folders, SimulatedDevice(folders, medians, spreads, **kwargs)


def _pick(tmp_path: Path, folders: dict[str, Path], device: SimulatedDevice, **kwargs: Any) -> dict[str, Any]:
    messages: list[str] = []
    data = pick_on_device(device, list(folders.values()), tmp_path, reference_accuracy=0.9, clock=device.clock,
                          on_round=lambda r, m: messages.append(m), **kwargs)
    data["messages"] = messages
    return data


def test_a_clear_winner_is_separated_in_the_first_rounds(tmp_path: Path) -> None:
    folders, device = _setup(tmp_path, {"slow": 2.0, "medium": 1.5, "fast": 1.0}, 0.01)
    data = _pick(tmp_path, folders, device)
    assert data["pick"]["winner"] == "fast" and data["pick"]["tie_set"] == ["fast"]
    assert data["stop"]["reason"] == "separated" and data["stop"]["text"] == "separated after 3 rounds"
    assert len(device.runs) == 9  # three rounds of three: no more than a fixed 3-round pick
    assert device.runs[:3] == ["slow", "medium", "fast"] and device.runs[3:6] == ["medium", "fast", "slow"]  # rotated
    assert data["rounds"] == 3 and data["messages"][0].startswith("round 1 of 3–12: 3 candidates")
    evidence = json.loads((tmp_path / "recommended.json").read_text())
    assert evidence["stop"]["reason"] == "separated" and evidence["rounds_planned"] == [3, 12]
    assert [r["round"] for r in evidence["round_log"]["fast"]] == [1, 2, 3]
    assert (tmp_path / "recommended").resolve() == folders["fast"].resolve()


def test_a_close_call_adds_rounds_for_the_tied_candidates_only(tmp_path: Path) -> None:
    folders, device = _setup(tmp_path, {"small": 1.0, "large": 1.0, "slow": 3.0}, {"small": 0.2, "large": 0.2, "slow": 0.01})
    data = _pick(tmp_path, folders, device, max_rounds=8)
    assert data["stop"]["reason"] == "rounds" and data["rounds"] == 8
    assert data["stop"]["text"] == "tie after the 8-round budget: large and small, broken by size" or data["stop"][
        "text"
    ] == "tie after the 8-round budget: small and large, broken by size"
    assert device.runs.count("slow") == 3 and device.runs.count("small") == device.runs.count("large") == 8
    assert data["pick"]["winner"] == "small"  # tied: the smaller file
    by_name = {c["name"]: c for c in data["pick"]["candidates"]}
    assert by_name["slow"]["rounds"] == 3 and by_name["small"]["rounds"] == 8 and by_name["slow"]["status"] == "slower"
    assert "adding rounds" in data["messages"][3]


def test_a_true_ten_percent_difference_is_separated_by_added_rounds(tmp_path: Path) -> None:
    folders, device = _setup(tmp_path, {"large": 1.0, "small": 1.1}, 0.03, seed=3)
    data = _pick(tmp_path, folders, device)
    assert data["pick"]["winner"] == "large" and data["stop"]["reason"] == "separated"
    assert 3 < data["rounds"] <= 12


def test_the_seconds_budget_stops_added_rounds(tmp_path: Path) -> None:
    folders, device = _setup(tmp_path, {"a": 1.0, "b": 1.0}, 0.2, seconds=10.0)
    data = _pick(tmp_path, folders, device, max_seconds=75)
    # three rounds always (60 s); a fourth would end at 80 s
    assert data["stop"]["reason"] == "seconds" and data["rounds"] == 3 and len(device.runs) == 6
    assert data["stop"]["text"].startswith("tie at the 75-s budget, after 3 rounds: ")


def test_a_settled_tie_stops_early(tmp_path: Path) -> None:
    folders, device = _setup(tmp_path, {"a": 1.0, "b": 1.01}, 0.001)
    data = _pick(tmp_path, folders, device)
    assert data["stop"]["reason"] == "settled" and data["rounds"] == 3
    assert data["stop"]["text"].startswith("tie within the 5% gap after 3 rounds")
    assert data["pick"]["winner"] == "a"  # the smaller file


def test_fixed_rounds(tmp_path: Path) -> None:
    folders, device = _setup(tmp_path, {"a": 1.0, "b": 1.0}, 0.2)
    data = _pick(tmp_path, folders, device, rounds=2, max_rounds=2)
    assert data["rounds"] == 2 and len(device.runs) == 4 and data["stop"]["text"].startswith("tie after the 2-round budget")


def test_a_disturbed_run_is_redone_and_the_redo_counts(tmp_path: Path) -> None:
    folders, device = _setup(tmp_path, {"slow": 2.0, "fast": 1.0}, 0.01, disturbed=lambda name, n: name == "fast" and n == 2)
    data = _pick(tmp_path, folders, device)
    fast = next(c for c in data["pick"]["candidates"] if c["name"] == "fast")
    assert device.runs.count("fast") == 4 and fast["rounds"] == 3
    assert (fast["rounds_redone"], fast["rounds_excluded"], fast["rounds_disturbed"]) == (1, 0, 0)
    assert data["disturbance"]["redone"] == 1 and data["disturbance"]["excluded"] == 0
    assert data["round_log"]["fast"][1]["redone"] is True


def test_a_disturbed_round_is_left_out_while_two_clean_ones_remain(tmp_path: Path) -> None:
    # the second run of "fast" and its redo are both disturbed
    folders, device = _setup(tmp_path, {"slow": 2.0, "fast": 1.0}, 0.01,
                             disturbed=lambda name, n: name == "fast" and n in (2, 3))
    data = _pick(tmp_path, folders, device)
    fast = next(c for c in data["pick"]["candidates"] if c["name"] == "fast")
    assert (fast["rounds"], fast["rounds_excluded"], fast["rounds_disturbed"]) == (2, 1, 0)
    assert data["disturbance"]["excluded"] == 1 and data["disturbance"]["used"] == 0


def test_a_busy_device_stops_redoing_and_says_its_rounds_were_disturbed(tmp_path: Path) -> None:
    folders, device = _setup(tmp_path, {"slow": 2.0, "fast": 1.0}, 0.01, disturbed=lambda name, n: True)
    data = _pick(tmp_path, folders, device)
    assert data["disturbance"]["redos_stopped"] is True and data["disturbance"]["redone"] == 2
    assert len(device.runs) == 6 + 2  # two redos, then none
    fast = next(c for c in data["pick"]["candidates"] if c["name"] == "fast")
    assert fast["rounds"] == 3 and fast["rounds_disturbed"] == 3  # used, and counted
    assert data["disturbance"]["used"] == 6
    assert data["disturbance"]["warnings"] == ["other processes used 1.3 CPU cores on average during the run (6 runs)"]
