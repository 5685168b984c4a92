"""The host session's triage (edge_agent.host.session), against a fake device: a skip, a refusal, a device-wide
failure, a device that cannot be asked, a finished run reused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edge_agent.host.client import DeviceCallError, PushOutcome
from edge_agent.host.session import AttemptPlanner, DeviceSession, SessionHooks, Target

pytestmark = pytest.mark.unit


class FakeDevice:
    """Runs ONNX only; ``refuse`` / ``fail`` name folders whose push is refused / drops the device."""

    address = "fake:1"

    def __init__(self, *, refuse: str = "", fail: str = "", unreachable: bool = False) -> None:
        self.refuse, self.fail, self.unreachable = refuse, fail, unreachable
        self.pushed: list[str] = []
        self.runs: dict[str, dict[str, Any]] = {}

    def wait_ready(self, timeout: float = 10.0) -> None:
        pass

    def info(self) -> dict[str, Any]:
        if self.unreachable:
            raise DeviceCallError(self.address, "UNAVAILABLE", "connection refused")
        return {"runtimes": [{"name": "onnxruntime"}]}

    def push(self, folder: Path, on_progress: Any = None) -> PushOutcome:
        if folder.name == self.refuse:
            raise DeviceCallError(self.address, "RESOURCE_EXHAUSTED", "quota")
        if folder.name == self.fail:
            raise DeviceCallError(self.address, "UNAVAILABLE", "gone")
        self.pushed.append(folder.name)
        return PushOutcome(folder.name.ljust(64, "0"), folder.name, False, 10, 0, 0.0)

    def get_run(self, run_id: str) -> dict[str, Any]:
        if run_id not in self.runs:
            raise DeviceCallError(self.address, "NOT_FOUND", run_id)
        return self.runs[run_id]

    def bench(self, sha256: str, settings: Any = None, *, run_id: Any = None, **_: Any) -> Iterator[dict[str, Any]]:
        yield {"run_id": run_id or "r", "state": "RUN_STATE_RUNNING", "progress": {"phase": "measuring", "done": 1, "total": 2}}
        yield {"run_id": run_id or "r", "state": "RUN_STATE_SUCCEEDED", "result": {"latency": {"p50_ms": 1.0}}}


def _target(tmp_path: Path, name: str, fmt: str = "onnx") -> Target:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": fmt}))
    return Target(name, folder, fmt, fields={"host_accuracy": 0.9})


class Seen(SessionHooks):
    def __init__(self) -> None:
        self.finished_names: list[str] = []
        self.events = 0

    def event(self, target: Target, event: dict[str, Any]) -> None:
        self.events += 1

    def finished(self, target: Target, entry: dict[str, Any]) -> None:
        self.finished_names.append(target.label)


def test_a_refusal_is_one_entry_and_the_others_still_run(tmp_path: Path) -> None:
    targets = [_target(tmp_path, "a"), _target(tmp_path, "pte", "executorch"), _target(tmp_path, "b"), _target(tmp_path, "c")]
    seen = Seen()
    result = DeviceSession(FakeDevice(refuse="b"), hooks=seen).run_all(targets)
    a, pte, b, c = result.entries
    assert list(a)[:3] == ["artifact", "host_accuracy", "sha256"] and a["state"] == "RUN_STATE_SUCCEEDED"
    assert "skipped" in pte and "sha256" not in pte
    assert b["state"] == "REFUSED" and b["error"] == {"code": "RESOURCE_EXHAUSTED", "message": "quota"}
    assert c["state"] == "RUN_STATE_SUCCEEDED" and result.device_error is None
    assert seen.finished_names == ["a", "pte", "b", "c"] and seen.events == 4


def test_a_device_wide_failure_stops_the_session_and_keeps_what_ran(tmp_path: Path) -> None:
    targets = [_target(tmp_path, "a"), _target(tmp_path, "b"), _target(tmp_path, "c")]
    result = DeviceSession(FakeDevice(fail="b")).run_all(targets)
    a, b, c = result.entries
    assert a["state"] == "RUN_STATE_SUCCEEDED" and b["state"] == "UNREACHABLE" and c["state"] == "NOT_RUN"
    assert result.device_error is not None and result.device_error.code == "UNAVAILABLE"
    assert "the device failed earlier" in c["error"]["message"]


def test_a_device_that_cannot_be_asked_runs_nothing(tmp_path: Path) -> None:
    seen = Seen()
    result = DeviceSession(FakeDevice(unreachable=True), hooks=seen).run_all([_target(tmp_path, "a")])
    assert result.device is None and result.entries[0]["state"] == "NOT_RUN" and seen.finished_names == []


def test_push_only_and_attempt_planning(tmp_path: Path) -> None:
    device = FakeDevice()
    [entry] = DeviceSession(device, bench=False).run_all([_target(tmp_path, "a")]).entries
    assert "sha256" in entry and "state" not in entry
    planner = AttemptPlanner(lambda sha: f"coll-{sha[:4]}")
    device.runs["coll-b000-a1"] = {"run_id": "coll-b000-a1", "state": "RUN_STATE_FAILED"}
    device.runs["coll-c000-a1"] = {"run_id": "coll-c000-a1", "state": "RUN_STATE_SUCCEEDED"}
    b, c = DeviceSession(device, planner=planner).run_all([_target(tmp_path, "b"), _target(tmp_path, "c")]).entries
    assert b["run_id"] == "coll-b000-a2" and "reused" not in b
    assert c["run_id"] == "coll-c000-a1" and c["reused"] is True
