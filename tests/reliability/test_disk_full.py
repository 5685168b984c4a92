"""Real full disks: the store on a small tmpfs, filled from outside while a push lands, at its commit (the
manifest write) and while a run finishes (the journal append). Expected: RESOURCE_EXHAUSTED (never UNKNOWN),
health NOT_SERVING or a clear error while the journal cannot be written, nothing lost, and everything working
again once space is freed, also after a restart. The tmpfs leaves room for the store's free-space reserve."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from pathlib import Path

import grpc
import pytest
from agent_helpers import tiny_onnx_bytes
from edge_agent.v1 import agent_pb2 as pb
from grpc_health.v1 import health_pb2

from reliability.reliability_harness import (
    NEVER,
    TERMINAL,
    Follower,
    auth,
    channel,
    get_run,
    health_status,
    manifest_for,
    nothing_lost,
    push_raw,
    push_with_resume,
    run_to_end,
    stub,
    wait_serving,
    wait_terminal,
)

#: The agent keeps 64 MiB free (StoreLimits.reserve_bytes); the rest is room for the tests' artifacts.
FS_SIZE = "100m"


def fill(folder: Path) -> Path:
    """Write until the filesystem says ENOSPC; returns the filler file (delete it to free the space)."""
    path = folder / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for block in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return path


def _free(filler: Path) -> None:
    filler.unlink()


def _held_push(port: int, data: bytes, hold_at: int, name: str = "held"):
    """A push that sends bytes up to ``hold_at``, then waits for ``go`` before sending the rest."""
    sent, go = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}
    header = pb.PushHeader(
        sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), name=name, manifest_json=manifest_for(data)
    )

    def requests():
        yield pb.PushRequest(header=header)
        for start in range(0, hold_at, 1 << 20):
            yield pb.PushRequest(chunk=pb.Chunk(offset=start, data=data[start : min(start + (1 << 20), hold_at)]))
        sent.set()
        go.wait(60)
        for start in range(hold_at, len(data), 1 << 20):
            yield pb.PushRequest(chunk=pb.Chunk(offset=start, data=data[start : start + (1 << 20)]))

    def push() -> None:
        try:
            with channel(port) as ch:
                outcome["reply"] = stub(ch).PushArtifact(requests(), timeout=90, metadata=auth())
        except grpc.RpcError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    return sent, go, thread, outcome


@pytest.fixture
def full_store(small_fs, make_agent):
    root = small_fs(FS_SIZE)
    return root, make_agent(store=root / "store")


@pytest.mark.parametrize("where", ["mid_push", "at_commit"])
def test_disk_full_during_a_push_is_resource_exhausted_and_recovers(full_store, where: str) -> None:
    root, agent = full_store
    data = tiny_onnx_bytes(3001)  # ~9.4 MB, not a multiple of the page size
    assert len(data) % 4096
    hold_at = (1 << 20) if where == "mid_push" else len(data) - 1  # at_commit: only a byte of a written page left
    sent, go, thread, outcome = _held_push(agent.port, data, hold_at)
    assert sent.wait(30)
    time.sleep(1.0)  # the agent has written what was sent
    filler = fill(root)
    go.set()
    thread.join(90)
    error = outcome.get("error")
    sha = hashlib.sha256(data).hexdigest()
    if error is None:
        # only an agent that reserved the whole file's space when the push began may succeed here
        assert "reply" in outcome, outcome
        assert where == "mid_push", "the manifest was written onto a full disk"
    else:
        assert error.code() not in NEVER, f"{error.code().name}: {error.details()}"
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{error.code().name}: {error.details()}"
        assert not (agent.store / "artifacts" / sha).exists(), "a push that failed was committed"
    _free(filler)
    wait_serving(agent.port, timeout=20)
    push_with_resume(agent.port, data)
    nothing_lost(agent.port, agent.store, {sha: data})
    agent.kill()
    agent.start()
    nothing_lost(agent.port, agent.store, {sha: data})


def test_disk_full_while_a_run_finishes_loses_nothing(full_store) -> None:
    root, agent = full_store
    sha = push_raw(agent.port, tiny_onnx_bytes(17)).artifact.sha256
    # every latency sample kept: the outcome's journal line is far larger than what is left of the file's last page
    first_settings = {"iterations": 100, "min_seconds": 3, "warmup_runs": 1, "warmup_min_seconds": 0.01, "keep_samples": True}
    first = Follower(agent.port, sha, "first", first_settings)
    first.wait_for(lambda e: e.state == pb.RUN_STATE_RUNNING and e.WhichOneof("kind") == "progress")
    second = Follower(agent.port, sha, "second", {"iterations": 5, "min_seconds": 0.01, "warmup_runs": 1})
    second.wait_for(lambda e: e.state == pb.RUN_STATE_QUEUED)
    filler = fill(root)
    try:
        # the first run's outcome cannot be journaled: the agent must say so (health or the client's stream)
        end = time.monotonic() + 20
        said_so = False
        while time.monotonic() < end and not said_so:
            status = health_status(agent.port, timeout=1)
            stream_error = first.error is not None and first.error.code() not in NEVER
            said_so = status != health_pb2.HealthCheckResponse.SERVING or stream_error
            time.sleep(0.2)
        if first.error is not None:
            assert first.error.code() not in NEVER, f"{first.error.code().name}: {first.error.details()}"
        assert said_so, "the journal cannot be written, yet health says SERVING and the client heard nothing"
        with channel(agent.port) as ch, pytest.raises(grpc.RpcError) as refused:
            list(stub(ch).RunBenchmark(pb.RunBenchmarkRequest(run_id="while-full", sha256=sha), timeout=10, metadata=auth()))
        assert refused.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE), (
            f"{refused.value.code().name}: {refused.value.details()}"
        )
    finally:
        _free(filler)
    wait_serving(agent.port, timeout=30)
    for run_id in ("first", "second"):
        assert wait_terminal(agent.port, run_id, timeout=60).state in TERMINAL
    after = run_to_end(agent.port, sha, run_id="after", timeout=120)
    assert after[-1].state == pb.RUN_STATE_SUCCEEDED, after[-1]
    agent.kill()
    agent.start()
    for run_id in ("first", "second", "after"):
        assert get_run(agent.port, run_id).state in TERMINAL, run_id
    assert get_run(agent.port, "after").state == pb.RUN_STATE_SUCCEEDED
    nothing_lost(agent.port, agent.store, {}, accepted_runs=["first", "second", "after"])
