"""Load held: stalled push streams, a burst of queued benchmarks and concurrent pushes against the quota, with
health and unary latency measured throughout (health < 1 s, ListArtifacts / GetDeviceInfo / GetRun < 2 s)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import grpc
import pytest
from agent_helpers import FAST, tiny_onnx_bytes
from edge_agent.v1 import agent_pb2 as pb
from google.protobuf import json_format

from reliability.reliability_harness import (
    HEALTH_BOUND_S,
    IDLE_TIMEOUT_FLAG,
    IDLE_TIMEOUT_SECONDS,
    NEVER,
    UNARY_BOUND_S,
    Prober,
    auth,
    channel,
    idle_args,
    nothing_lost,
    push_raw,
    run_to_end,
    stub,
    supports_flag,
    threads_running,
    unique_model,
)

STALLED_STREAMS = 24
BURST = 50


def assert_responsive(prober: Prober, what: str) -> None:
    worst_health = max(prober.health_s)
    assert worst_health < HEALTH_BOUND_S, f"{what}: health took {worst_health:.2f} s (failures: {prober.failures})"
    for name, seconds in prober.unary_s.items():
        assert max(seconds) < UNARY_BOUND_S, f"{what}: {name} took {max(seconds):.2f} s (failures: {prober.failures})"
    assert not prober.failures, f"{what}: {prober.failures}"


def stalled_header(i: int) -> pb.PushRequest:
    sha = hashlib.sha256(os.urandom(16) + bytes([i])).hexdigest()
    size = 1 << 20
    manifest = {
        "schema_version": 1,
        "format": "onnx",
        "precision": "fp32",
        "file": {"name": "model.onnx", "sha256": sha, "size_bytes": size},
    }
    return pb.PushRequest(
        header=pb.PushHeader(sha256=sha, size_bytes=size, name=f"stalled-{i}", manifest_json=json.dumps(manifest))
    )


def test_stalled_push_streams_do_not_stop_the_agent(make_agent) -> None:
    agent = make_agent(args=idle_args())
    release = threading.Event()

    def stalled(i: int):
        yield stalled_header(i)
        release.wait(60)  # header sent, then nothing

    prober = Prober(agent.port)
    prober.warm_up()
    channels = [channel(agent.port) for _ in range(4)]
    futures = [stub(channels[i % 4]).PushArtifact.future(stalled(i), timeout=60, metadata=auth()) for i in range(STALLED_STREAMS)]
    try:
        time.sleep(1.0)
        for _ in range(5):
            prober.round()
            if prober.failures:  # a deadline already missed: no need to wait for more
                break
            time.sleep(0.2)
        assert_responsive(prober, f"{STALLED_STREAMS} stalled push streams")
        assert supports_flag(IDLE_TIMEOUT_FLAG), f"the agent has no {IDLE_TIMEOUT_FLAG} (idle push streams are never ended)"
        deadline = time.monotonic() + IDLE_TIMEOUT_SECONDS + 20
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            time.sleep(0.2)
        assert all(f.done() for f in futures), "idle push streams were not ended by the agent"
        for future in futures:
            exc = future.exception()
            assert exc is not None, "a stalled push succeeded"
            assert exc.code() not in NEVER, exc.code().name  # ended by the agent, long before the client's deadline
    finally:
        release.set()
        for f in futures:
            f.cancel()
        prober.close()
        for ch in channels:
            ch.close()
    nothing_lost(agent.port, agent.store)


def test_burst_of_benchmarks_keeps_health_and_unary_calls_answering(make_agent) -> None:
    agent = make_agent()
    sha = push_raw(agent.port, tiny_onnx_bytes(12)).artifact.sha256
    outcomes: dict[str, object] = {}

    def run(i: int) -> None:
        run_id = f"burst-{i}"
        request = pb.RunBenchmarkRequest(run_id=run_id, sha256=sha)
        json_format.ParseDict(FAST, request.settings)
        try:
            with channel(agent.port) as ch:
                events = list(stub(ch).RunBenchmark(request, timeout=240, metadata=auth()))
            outcomes[run_id] = events[-1].state
        except grpc.RpcError as exc:
            outcomes[run_id] = exc.code()

    prober = Prober(agent.port)
    prober.warm_up()
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(BURST)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        end = time.monotonic() + 240
        while any(t.is_alive() for t in threads) and time.monotonic() < end and len(prober.health_s) < 20 and not prober.failures:
            prober.round(get_run="burst-0")
            time.sleep(0.25)
        assert_responsive(prober, f"a burst of {BURST} RunBenchmark calls")
    finally:
        for t in threads:
            t.join(timeout=240)
        prober.close()
    accepted = [run_id for run_id, outcome in outcomes.items() if not isinstance(outcome, grpc.StatusCode)]
    refused = {run_id: o for run_id, o in outcomes.items() if isinstance(o, grpc.StatusCode)}
    assert set(refused.values()) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}, refused
    assert accepted and all(outcomes[r] == pb.RUN_STATE_SUCCEEDED for r in accepted), outcomes
    nothing_lost(agent.port, agent.store, accepted_runs=accepted)


QUOTA_MB = 40
PUSHES = 16


def test_concurrent_pushes_never_exceed_the_quota(make_agent) -> None:
    agent = make_agent(args=["--quota-mb", str(QUOTA_MB)])
    models = [tiny_onnx_bytes(1671 + i) for i in range(PUSHES)]  # ~5 MiB each
    results = threads_running(lambda data: push_raw(agent.port, data, name="q", timeout=120), models)
    committed = {}
    for data, result in zip(models, results, strict=True):
        if isinstance(result, grpc.RpcError):
            assert result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{result.code().name}: {result.details()}"
        else:
            assert isinstance(result, pb.PushResponse), result
            committed[hashlib.sha256(data).hexdigest()] = data
    with channel(agent.port) as ch:
        listed = stub(ch).ListArtifacts(pb.ListArtifactsRequest(), timeout=10, metadata=auth()).artifacts
    total = sum(a.size_bytes for a in listed)
    assert total <= QUOTA_MB << 20, f"{len(listed)} artifacts, {total / (1 << 20):.1f} MiB committed over a {QUOTA_MB} MiB quota"
    assert committed, "no push succeeded"
    assert {a.sha256 for a in listed} == set(committed)
    on_disk = sum(p.stat().st_size for p in (agent.store / "artifacts").rglob("model.*"))
    assert on_disk <= QUOTA_MB << 20
    victim = next(iter(committed))
    with channel(agent.port) as ch:
        stub(ch).DeleteArtifact(pb.DeleteArtifactRequest(sha256=victim), timeout=10, metadata=auth())
    committed.pop(victim)
    nothing_lost(agent.port, agent.store, committed)


@pytest.mark.parametrize("streams", [4])
def test_benchmark_streams_and_pushes_at_once(make_agent, streams: int) -> None:
    """Pushes and benchmarks at the same time all land: correct hashes, one terminal result each."""
    agent = make_agent()
    sha = push_raw(agent.port, tiny_onnx_bytes(13)).artifact.sha256
    models = [tiny_onnx_bytes(300 + i) for i in range(streams)]

    def work(i: int):
        if i < streams:
            return push_raw(agent.port, models[i], name=f"p{i}")
        request = pb.RunBenchmarkRequest(run_id=f"mix-{i}", sha256=sha)
        json_format.ParseDict(FAST, request.settings)
        with channel(agent.port) as ch:
            return list(stub(ch).RunBenchmark(request, timeout=120, metadata=auth()))[-1]

    results = threads_running(work, range(2 * streams))
    assert not [r for r in results if isinstance(r, Exception)], results
    nothing_lost(
        agent.port,
        agent.store,
        {hashlib.sha256(m).hexdigest(): m for m in models},
        accepted_runs=[f"mix-{i}" for i in range(streams, 2 * streams)],
    )


def test_unauthenticated_health_watches_take_no_room_from_authenticated_calls(make_agent) -> None:
    # Health needs no token, so anyone can open Watch streams; from one address they once took all 32 of that
    # address's stream slots, and the token holder's pushes and benchmarks were refused.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    agent = make_agent()
    watch_channel = channel(agent.port)
    watches, refused = [], 0
    try:
        for _ in range(40):
            call = health_pb2_grpc.HealthStub(watch_channel).Watch(health_pb2.HealthCheckRequest(), timeout=120)
            try:
                next(call)  # SERVING: the watch is open
                watches.append(call)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                assert "health watches" in (exc.details() or "")
                refused += 1
        # the token holder, from the same address, still pushes and benchmarks
        model = unique_model()
        pushed = push_raw(agent.port, model, name="after-watches")
        events = run_to_end(agent.port, pushed.artifact.sha256)
    finally:
        for call in watches:
            call.cancel()
        watch_channel.close()
    assert len(watches) == 4 and refused == 36  # the per-address watch budget
    assert events[-1].WhichOneof("kind") == "result"
    nothing_lost(agent.port, agent.store)


def test_a_thousand_idle_connections_leave_the_agent_answering(make_agent) -> None:
    # systemd gives a service 1,024 open files (soft). 1,100 idle HTTP/2 connections from anyone (no token needed)
    # once took them all: health and pushes timed out until grpc closed the connections two minutes later.
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 4096, f"this machine allows {hard} open files; the test needs 4,096"
    agent = make_agent(start=False)
    command = agent.command
    agent.command = lambda: ["prlimit", f"--nofile=1024:{hard}", "--", *command()]  # type: ignore[method-assign]
    agent.start()
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # then nothing
    sockets = []
    try:
        for _ in range(1100):
            s = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
            s.sendall(preface)
            sockets.append(s)
        time.sleep(2)
        prober = Prober(agent.port)
        try:
            prober.warm_up()
            for _ in range(3):
                prober.round()
            assert_responsive(prober, "1,100 idle connections")
        finally:
            prober.close()
        pushed = push_raw(agent.port, unique_model(), name="beside-idle-connections", timeout=20)
        assert pushed.artifact.sha256
    finally:
        for s in sockets:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    nothing_lost(agent.port, agent.store)


def test_a_watch_that_presents_the_token_is_one_of_the_token_holders_streams(make_agent) -> None:
    # Unauthenticated watches can fill the watch budget; the token holder's own watch is not counted there.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    agent = make_agent()
    ch = channel(agent.port)
    opened = []
    try:
        for _ in range(4):  # this address's whole unauthenticated budget
            call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=60)
            next(call)
            opened.append(call)
        anonymous = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        with pytest.raises(grpc.RpcError) as refused:
            next(anonymous)
        holder = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=60, metadata=auth())
        first = next(holder)
        opened.append(holder)
    finally:
        for call in opened:
            call.cancel()
        ch.close()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert first.status == health_pb2.HealthCheckResponse.SERVING
