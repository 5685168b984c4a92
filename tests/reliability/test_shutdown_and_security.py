"""Graceful stop under load, secure by default without a token file, one agent per store."""

from __future__ import annotations

import json
import signal
import stat
import time

import grpc
from agent_helpers import tiny_onnx_bytes
from edge_agent.v1 import agent_pb2 as pb
from grpc_health.v1 import health_pb2

from reliability.reliability_harness import Follower, auth, channel, get_run, health_status, nothing_lost, push_raw, stub

SERVICE = pb.DESCRIPTOR.services_by_name["EdgeAgent"]


def test_sigterm_refuses_new_runs_and_never_starts_a_queued_one(make_agent) -> None:
    agent = make_agent(grace=10.0)
    sha = push_raw(agent.port, tiny_onnx_bytes(15)).artifact.sha256
    short = {"iterations": 100, "min_seconds": 2.5, "warmup_runs": 1, "warmup_min_seconds": 0.01, "timeout_seconds": 60}
    running = Follower(agent.port, sha, "running", short)
    running.wait_for(lambda e: e.state == pb.RUN_STATE_RUNNING and e.WhichOneof("kind") == "progress")
    queued = Follower(agent.port, sha, "queued", {"iterations": 100, "min_seconds": 30, "timeout_seconds": 120})
    queued.wait_for(lambda e: e.state == pb.RUN_STATE_QUEUED)
    agent.proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + 5
    while health_status(agent.port, timeout=1) == health_pb2.HealthCheckResponse.SERVING and time.monotonic() < end:
        time.sleep(0.02)
    request = pb.RunBenchmarkRequest(run_id="late", sha256=sha)
    with channel(agent.port) as ch:
        try:
            list(stub(ch).RunBenchmark(request, timeout=10, metadata=auth()))
            late = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            late = exc.code()
    assert agent.proc.poll() is None, "the agent exited before the grace period could be tested"
    assert late == grpc.StatusCode.UNAVAILABLE, f"new RunBenchmark during grace: {late.name}"
    assert agent.proc.wait(timeout=60) == 0
    running.thread.join(30)
    queued.thread.join(30)
    assert not [e for e in queued.events if e.state == pb.RUN_STATE_RUNNING], "the queued run started during grace"
    entries = [json.loads(line) for line in (agent.store / "runs" / "journal.jsonl").read_text().splitlines()]
    assert not [e for e in entries if e["run_id"] == "queued" and e["event"] == "started"], "the queued run started"
    agent.start()
    assert get_run(agent.port, "queued").state == pb.RUN_STATE_INTERRUPTED
    assert get_run(agent.port, "running").state == pb.RUN_STATE_SUCCEEDED  # it finished within the grace period
    try:
        get_run(agent.port, "late")
        raise AssertionError("the run refused during grace was accepted")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    nothing_lost(agent.port, agent.store, accepted_runs=["running", "queued"])


def _call_without_token(port: int, method) -> grpc.StatusCode:
    path = f"/{SERVICE.full_name}/{method.name}"
    with channel(port) as ch:
        try:
            if method.client_streaming:
                ch.stream_unary(path)(iter([b""]), timeout=10)
            elif method.server_streaming:
                list(ch.unary_stream(path)(b"", timeout=10))
            else:
                ch.unary_unary(path)(b"", timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_without_token_file_the_agent_generates_one_and_requires_it(make_agent) -> None:
    agent = make_agent(token=False)  # neither --token-file nor --insecure
    codes = {m.name: _call_without_token(agent.port, m) for m in SERVICE.methods}
    assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes
    token_path = agent.store / "token"
    assert token_path.is_file(), "no token file generated in the store"
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert str(token_path) in agent.output(), "the agent does not say where its token is"
    token = token_path.read_text().strip()
    assert len(token) >= 16
    with channel(agent.port) as ch:
        stub(ch).ListArtifacts(pb.ListArtifactsRequest(), timeout=10, metadata=auth(token))
    agent.kill()
    agent.start()
    assert token_path.read_text().strip() == token, "the token changed across a restart"
    nothing_lost(agent.port, agent.store, token=token)


def test_second_agent_on_the_same_store_refuses_to_start(make_agent) -> None:
    first = make_agent()
    data = tiny_onnx_bytes(16)
    sha = push_raw(first.port, data).artifact.sha256
    second = make_agent(store=first.store, start=False)
    proc = second.spawn()
    end = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    if proc.poll() is None:
        second.kill()
        raise AssertionError(f"a second agent started on {first.store} while the first runs: {second.output()[-500:]}")
    assert proc.returncode != 0
    output = second.output()
    assert str(first.store) in output or "lock" in output.lower() or "in use" in output.lower(), output[-1000:]
    assert "Traceback" not in output, output[-2000:]
    nothing_lost(first.port, first.store, {sha: data})
