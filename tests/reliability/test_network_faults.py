"""A TCP fault proxy between client and agent: connections reset mid-push and mid-benchmark-stream, stalled and
delayed. The client resumes; nothing is lost, the sha256 is right, results are retrievable with GetRun."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import grpc
from agent_helpers import FAST, client_for, tiny_onnx_bytes
from edge_agent.v1 import agent_pb2 as pb
from google.protobuf import json_format

from reliability.reliability_harness import (
    IDLE_TIMEOUT_SECONDS,
    auth,
    channel,
    get_run,
    idle_args,
    nothing_lost,
    push_raw,
    push_requests,
    push_with_resume,
    stub,
)
from reliability.tcp_proxy import TcpProxy


def test_push_resumes_across_connection_resets(make_agent) -> None:
    agent = make_agent(args=idle_args())  # a push cut off may be held until the agent's idle timeout ends it
    data = tiny_onnx_bytes(3200)  # ~10 MB
    sha = hashlib.sha256(data).hexdigest()
    with TcpProxy(agent.port) as proxy:
        proxy.cut_after(2 << 20, 5 << 20, 8 << 20)
        reply = push_with_resume(proxy.port, data, within=90)
        assert proxy.cuts >= 1, "the proxy never cut the push"
        assert proxy.bytes_up < 2 * len(data), f"{proxy.bytes_up} bytes sent for {len(data)}: the push did not resume"
    assert reply.artifact.sha256 == sha
    nothing_lost(agent.port, agent.store, {sha: data})


def test_push_survives_a_stall_and_a_slow_link(make_agent) -> None:
    agent = make_agent()
    data = tiny_onnx_bytes(1000)  # ~3 MB
    with TcpProxy(agent.port) as proxy:
        proxy.delay = 0.005
        timer = threading.Timer(0.3, proxy.stall)
        timer.start()
        threading.Timer(3.3, proxy.resume).start()
        reply = push_raw(proxy.port, data, timeout=60)
        timer.join()
    assert reply.artifact.sha256 == hashlib.sha256(data).hexdigest()
    nothing_lost(agent.port, agent.store, {reply.artifact.sha256: data})


def test_benchmark_stream_reset_mid_run_reattaches_and_runs_once(make_agent) -> None:
    agent = make_agent()
    sha = push_raw(agent.port, tiny_onnx_bytes(18)).artifact.sha256
    request = pb.RunBenchmarkRequest(run_id="through-proxy", sha256=sha)
    json_format.ParseDict({"iterations": 100, "min_seconds": 3, "warmup_runs": 1, "warmup_min_seconds": 0.01}, request.settings)
    events: list[pb.RunEvent] = []
    errors: list[str] = []
    with TcpProxy(agent.port) as proxy:
        for _attempt in range(6):  # what a client does: re-attach with the same run id
            try:
                with channel(proxy.port) as ch:
                    for event in stub(ch).RunBenchmark(request, timeout=10, metadata=auth()):
                        events.append(event)
                        if event.WhichOneof("kind") == "progress" and proxy.cuts == 0:
                            proxy.cut_all()  # mid-run
                if events and events[-1].WhichOneof("kind") in ("result", "error"):
                    break
            except grpc.RpcError as exc:
                errors.append(exc.code().name)
                time.sleep(0.5)
        assert proxy.cuts == 1
    assert errors, "the reset did not reach the client"
    last = events[-1]
    assert last.state == pb.RUN_STATE_SUCCEEDED, last
    stored = get_run(agent.port, "through-proxy")
    assert stored.state == pb.RUN_STATE_SUCCEEDED
    assert stored.result.latency.p50_ms == last.result.latency.p50_ms
    journal = [json.loads(line) for line in (agent.store / "runs" / "journal.jsonl").read_text().splitlines()]
    assert [e["event"] for e in journal if e["run_id"] == "through-proxy"].count("started") == 1, "the run ran twice"
    nothing_lost(agent.port, agent.store, accepted_runs=["through-proxy"])


def test_results_stream_stalled_then_resumed(make_agent) -> None:
    agent = make_agent()
    sha = push_raw(agent.port, tiny_onnx_bytes(19)).artifact.sha256
    with TcpProxy(agent.port) as proxy, client_for(proxy.port) as client:
        proxy.stall()
        threading.Timer(3.0, proxy.resume).start()
        events = list(client.bench(sha, FAST, run_id="stalled-stream"))
    assert events[-1]["state"] == "RUN_STATE_SUCCEEDED"
    assert get_run(agent.port, "stalled-stream").state == pb.RUN_STATE_SUCCEEDED
    nothing_lost(agent.port, agent.store, accepted_runs=["stalled-stream"])


def test_pushes_cancelled_right_after_their_header_never_leave_the_artifact_in_progress(make_agent) -> None:
    # A client that goes away while the agent is reserving its push (begin_push on a worker thread) must not leave
    # the reservation behind: the artifact would be "in progress" for good and every later push of it refused.
    agent = make_agent(args=idle_args())
    data = tiny_onnx_bytes(640)
    sha = hashlib.sha256(data).hexdigest()
    with channel(agent.port) as ch:
        for delay in [0.0, 0.001, 0.002, 0.005, 0.01] * 8:
            call = stub(ch).PushArtifact.future(push_requests(data, chunk=1 << 16), timeout=30, metadata=auth())
            time.sleep(delay)
            call.cancel()
    # Within the idle timeout and a margin every cancelled push has ended: the next one goes through.
    reply = push_with_resume(agent.port, data, within=3 * IDLE_TIMEOUT_SECONDS + 5)
    assert reply.artifact.sha256 == sha
    nothing_lost(agent.port, agent.store, {sha: data})
