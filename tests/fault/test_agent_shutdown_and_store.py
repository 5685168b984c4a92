"""The daemon's stop and start: SIGTERM semantics, a token always, one agent per store."""

from __future__ import annotations

import contextlib
import json
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agent_helpers import AgentProcess, audit_store, client_for, tiny_onnx_bytes, wait_for, write_artifact
from edge_agent.host.client import DeviceCallError
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.fault


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_stop_signal_refuses_new_runs_with_unavailable_and_never_starts_queued_ones(
    tmp_path: Path, token_file: Path, signum: int
) -> None:
    # SIGHUP (a closed ssh session, an operator's "reload") used to kill the agent at once, losing the running run.
    store = tmp_path / "store"
    agent = AgentProcess(store, token_file)
    try:
        port = agent.start()
        with client_for(port) as client:
            sha = client.push(write_artifact(tmp_path / "a", tiny_onnx_bytes())).sha256
            forever = {"iterations": 10**6, "min_seconds": 600, "timeout_seconds": 900}
            long = client.bench(sha, forever, run_id="long", reconnects=0)
            for event in long:
                if "progress" in event:
                    break
            queued = client.bench(sha, {"iterations": 5}, run_id="queued", reconnects=0)
            assert "queue_position" in next(queued)
            assert agent.proc is not None
            agent.proc.send_signal(signum)
            wait_for(lambda: _health(port) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=5)
            with pytest.raises(DeviceCallError) as refused:
                list(client.bench(sha, {"iterations": 5}, run_id="late", reconnects=0))
            assert refused.value.code == "UNAVAILABLE"
            assert agent.proc.wait(timeout=60) == 0
        entries = [json.loads(line) for line in (store / "runs" / "journal.jsonl").read_text().splitlines()]
        queued_events = [e["event"] for e in entries if e["run_id"] == "queued"]
        assert queued_events == ["accepted", "finished"], queued_events  # never "started"
        assert [e["state"] for e in entries if e["run_id"] == "queued" and e["event"] == "finished"] == ["INTERRUPTED"]
        assert not [e for e in entries if e["run_id"] == "late"]
        # The running one got its grace period, then ended INTERRUPTED, exactly once; a restart reports it so.
        assert [e["state"] for e in entries if e["run_id"] == "long" and e["event"] == "finished"] == ["INTERRUPTED"]
        agent.start()
        with client_for(agent.port) as client:
            assert client.get_run("long")["state"] == "RUN_STATE_INTERRUPTED"
        audit_store(store, {sha: (tmp_path / "a" / "model.onnx").read_bytes()})
    finally:
        agent.close()


def _serve(store: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "serve", "--listen", "127.0.0.1:0", "--store", str(store), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def _serving(store: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``edge-agent serve`` on a free port for the block; SIGTERM and its pipes closed afterwards."""
    proc = _serve(store, *extra)
    try:
        yield proc, _port(proc)
    finally:
        _close(proc)


def _close(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=60)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def _port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving on" in line, line + (proc.stderr.read() if proc.stderr else "")
    return int(line.split("serving on ", 1)[1].split()[0].rsplit(":", 1)[1])


def test_without_a_token_file_the_agent_makes_one_and_requires_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with _serving(store) as (_proc, port):
        token_path = store / "token"
        assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
        token = token_path.read_text().strip()
        assert len(token) >= 32
        with client_for(port, token=None) as anonymous, pytest.raises(DeviceCallError) as denied:
            anonymous.list_artifacts()
        assert denied.value.code == "UNAUTHENTICATED"
        with client_for(port, token=token) as client:
            assert client.list_artifacts() == []
        second = _serve(store)  # the same store: refused while the first agent runs
        try:
            assert second.wait(timeout=60) != 0
            assert "another edge-agent" in (second.stderr.read() if second.stderr else "")
        finally:
            _close(second)
    with _serving(store) as (_proc, port), client_for(port, token=token) as client:  # a restart keeps the token
        assert client.list_artifacts() == []


def test_insecure_is_the_only_way_to_run_without_a_token(tmp_path: Path) -> None:
    with _serving(tmp_path / "store", "--insecure") as (_proc, port), client_for(port, token=None) as client:
        assert client.list_artifacts() == []
    assert not (tmp_path / "store" / "token").exists()
