"""A real agent on 127.0.0.1 (port 0, in-process), driven through real gRPC channels."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import venv
from pathlib import Path

import grpc
import pytest
from agent_helpers import FAST, TOKEN, audit_store, client_for, tiny_onnx_bytes, write_artifact
from edge_agent.config import AgentConfig
from edge_agent.host.client import DeviceCallError
from edge_agent.service.server import run_server
from edge_agent.v1 import agent_pb2 as pb
from edge_agent.v1 import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.integration


def _staging_files(store: Path) -> list[Path]:
    return [p for p in (store / "staging").iterdir()]


def _service_methods() -> list[tuple[str, bool, bool]]:
    service = pb.DESCRIPTOR.services_by_name["EdgeAgent"]
    return [(m.name, m.client_streaming, m.server_streaming) for m in service.methods]


def test_every_method_needs_the_token_and_writes_nothing(agent, tmp_path: Path) -> None:
    port, store = agent
    data = tiny_onnx_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for name, client_streaming, server_streaming in _service_methods():
            path = f"/edge_agent.v1.EdgeAgent/{name}"
            for metadata in ((), (("authorization", "Bearer wrong-token-xxxxxxxx"),), (("x-token", TOKEN),)):
                if client_streaming:
                    header = pb.PushRequest(header=pb.PushHeader(sha256=sha, size_bytes=len(data), name="m", manifest_json="{}"))
                    call = channel.stream_unary(path, request_serializer=pb.PushRequest.SerializeToString)
                    requests = iter([header, pb.PushRequest(chunk=pb.Chunk(offset=0, data=data))])
                    with pytest.raises(grpc.RpcError) as err:
                        call(requests, timeout=5, metadata=metadata)
                elif server_streaming:
                    call = channel.unary_stream(path, request_serializer=pb.RunBenchmarkRequest.SerializeToString)
                    with pytest.raises(grpc.RpcError) as err:
                        list(call(pb.RunBenchmarkRequest(sha256=sha), timeout=5, metadata=metadata))
                else:
                    call = channel.unary_unary(path, request_serializer=lambda m: b"")
                    with pytest.raises(grpc.RpcError) as err:
                        call(object(), timeout=5, metadata=metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
                assert TOKEN not in (err.value.details() or "")
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # health needs no token
    assert _staging_files(store) == [] and list((store / "artifacts").iterdir()) == []


def test_push_dedup_list_delete(agent, tmp_path: Path) -> None:
    port, _store = agent
    folder = write_artifact(tmp_path / "a", tiny_onnx_bytes())
    with client_for(port) as client:
        first = client.push(folder)
        assert not first.already_present and first.bytes_sent == (folder / "model.onnx").stat().st_size
        again = client.push(folder)
        assert again.already_present and again.bytes_sent == 0
        assert [a["sha256"] for a in client.list_artifacts()] == [first.sha256]
        assert client.delete(first.sha256)
        assert client.list_artifacts() == []
        with pytest.raises(DeviceCallError) as err:
            client.delete(first.sha256)
        assert err.value.code == "NOT_FOUND"


def test_a_push_of_a_present_artifact_reads_its_manifest_as_a_new_push_does(agent, tmp_path: Path) -> None:
    port, store = agent
    folder = write_artifact(tmp_path / "a", tiny_onnx_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "model.onnx").read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    def push_header(manifest_json: str) -> pb.PushResponse:
        header = pb.PushHeader(sha256=sha, size_bytes=len(data), name="a", manifest_json=manifest_json)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            return agent_pb2_grpc.EdgeAgentStub(channel).PushArtifact(
                iter([pb.PushRequest(header=header)]), timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),)
            )

    with client_for(port) as client:
        assert not client.push(folder).already_present
    assert push_header(json.dumps(manifest)).already_present  # the header alone: one round trip
    # Within the message limit but over the manifest cap: refused as it is for a new push, not parsed unbounded.
    oversized = json.dumps({**manifest, "notes": "x" * (300 << 10)})
    wrong_size = json.dumps({**manifest, "file": {**manifest["file"], "size_bytes": len(data) + 1}})
    for manifest_json, fragment in (
        (oversized, "manifest is larger than 262144 bytes"),
        (wrong_size, "do not match the push header"),
        (json.dumps({**manifest, "precision": "int8"}), "already on this device as a fp32 onnx artifact"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            push_header(manifest_json)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in (err.value.details() or "")
    audit_store(store, {sha: data})
    assert _staging_files(store) == []


def test_interrupted_push_resumes_without_resending(agent, tmp_path: Path) -> None:
    port, store = agent
    data = tiny_onnx_bytes(256)  # ~200 KB
    folder = write_artifact(tmp_path / "a", data)
    sha = hashlib.sha256(data).hexdigest()
    manifest = (folder / "manifest.json").read_text()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = agent_pb2_grpc.EdgeAgentStub(channel)
        header = pb.PushRequest(header=pb.PushHeader(sha256=sha, size_bytes=len(data), name="a", manifest_json=manifest))
        half = pb.PushRequest(chunk=pb.Chunk(offset=0, data=data[: len(data) // 2]))
        with pytest.raises(grpc.RpcError) as err:
            stub.PushArtifact(iter([header, half]), timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with client_for(port) as client:
        stat = client.stub.StatArtifact(pb.StatArtifactRequest(sha256=sha), timeout=5, metadata=client._metadata)
        assert (stat.present, stat.staged_bytes) == (False, len(data) // 2)
        outcome = client.push(folder)
        assert outcome.resumed_from == len(data) // 2 and outcome.bytes_sent == len(data) - len(data) // 2
    audit_store(store, {sha: data})


def test_corrupted_chunk_is_data_loss_and_nothing_is_stored(agent, tmp_path: Path) -> None:
    port, store = agent
    data = tiny_onnx_bytes()
    folder = write_artifact(tmp_path / "a", data)
    sha = hashlib.sha256(data).hexdigest()
    flipped = bytearray(data)
    flipped[100] ^= 0x04
    header = pb.PushHeader(sha256=sha, size_bytes=len(data), name="a", manifest_json=(folder / "manifest.json").read_text())
    with client_for(port) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.PushArtifact(
                iter([pb.PushRequest(header=header), pb.PushRequest(chunk=pb.Chunk(offset=0, data=bytes(flipped)))]),
                timeout=10,
                metadata=client._metadata,
            )
        assert err.value.code() == grpc.StatusCode.DATA_LOSS
        assert client.list_artifacts() == [] and _staging_files(store) == []
        assert not client.push(folder).already_present  # a clean push afterwards succeeds


def test_benchmark_streams_events_and_is_idempotent(agent, tmp_path: Path) -> None:
    port, store = agent
    folder = write_artifact(tmp_path / "a", tiny_onnx_bytes())
    with client_for(port) as client:
        sha = client.push(folder).sha256
        settings = {**FAST, "keep_samples": True, "batch_size": 4}
        events = list(client.bench(sha, settings, run_id="run-1"))
        assert "queue_position" in events[0]
        assert any("phase" in e or "progress" in e for e in events[1:-1])
        result = events[-1]["result"]
        lat = result["latency"]
        assert lat["count"] >= 5 and len(lat["samples_ms"]) == lat["count"]
        assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert result["peak_rss_bytes"] >= result["baseline_rss_bytes"] > 0
        assert result["settings"]["batch_size"] == 4 and len(result["output_sample"]) == 10
        assert result["runtime"] == "onnxruntime" and "temperature_c" in result["state_before"]
        stored = client.get_run("run-1")
        assert stored["state"] == "RUN_STATE_SUCCEEDED" and stored["result"]["latency"]["p50_ms"] == lat["p50_ms"]
        replay = list(client.bench(sha, settings, run_id="run-1"))  # same id: the stored outcome, no second run
        assert len(replay) == 1 and replay[0]["result"]["latency"]["p50_ms"] == lat["p50_ms"]
        # The id names that run: asking it of another artifact or with other settings is an error, not a replay.
        other = client.push(write_artifact(tmp_path / "b", tiny_onnx_bytes(8))).sha256
        for wrong_sha, wrong_settings in ((other, settings), (sha, FAST)):
            with pytest.raises(DeviceCallError) as refused:
                list(client.bench(wrong_sha, wrong_settings, run_id="run-1", reconnects=0))
            assert refused.value.code == "INVALID_ARGUMENT" and "already names a run" in refused.value.details
        assert [r["run_id"] for r in client.list_runs()] == ["run-1"]
    audit_store(store, {sha: (folder / "model.onnx").read_bytes()})


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"iterations": 10**9}, "iterations"),
        ({"warmup_runs": -5}, "warmup_runs"),
        ({"threads": 4096}, "threads"),
        ({"batch_size": 100000}, "batch_size"),
        ({"timeout_seconds": 10**7}, "timeout_seconds"),
    ],
)
def test_settings_out_of_bounds(agent, tmp_path: Path, settings: dict, fragment: str) -> None:
    port, _ = agent
    with client_for(port) as client:
        sha = client.push(write_artifact(tmp_path / "a", tiny_onnx_bytes())).sha256
        with pytest.raises(DeviceCallError) as err:
            list(client.bench(sha, settings))
    assert err.value.code == "INVALID_ARGUMENT" and fragment in err.value.details and "allowed" in err.value.details


def test_unknown_artifact_is_not_found(agent) -> None:
    port, _ = agent
    with client_for(port) as client, pytest.raises(DeviceCallError) as err:
        list(client.bench("a" * 64, FAST))
    assert err.value.code == "NOT_FOUND"


@pytest.mark.parametrize(
    ("fault", "state", "code"),
    [("worker_abort", "RUN_STATE_FAILED", "WORKER_CRASHED"), ("worker_hang", "RUN_STATE_TIMED_OUT", "TIMED_OUT")],
)
def test_crashing_or_hanging_worker_fails_only_its_run(
    agent, tmp_path: Path, monkeypatch, fault: str, state: str, code: str
) -> None:
    port, store = agent
    with client_for(port) as client:
        sha = client.push(write_artifact(tmp_path / "a", tiny_onnx_bytes())).sha256
        monkeypatch.setenv("EDGE_AGENT_ENABLE_FAULTS", "1")
        monkeypatch.setenv("EDGE_AGENT_FAULT", fault)
        last = list(client.bench(sha, {**FAST, "timeout_seconds": 2}))[-1]
        assert last["state"] == state and last["error"]["code"] == code
        monkeypatch.delenv("EDGE_AGENT_FAULT")
        client.wait_ready(5)  # still SERVING
        assert "result" in list(client.bench(sha, FAST))[-1]
    audit_store(store, {})


def test_raw_garbage_to_every_method_is_an_error_not_a_crash(agent) -> None:
    port, store = agent
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for name, client_streaming, server_streaming in _service_methods():
            path = f"/edge_agent.v1.EdgeAgent/{name}"
            garbage = b"\xff\xff\xff\x0f\x00"
            with pytest.raises(grpc.RpcError):
                if client_streaming:
                    channel.stream_unary(path)(iter([garbage, garbage]), timeout=5, metadata=metadata)
                elif server_streaming:
                    list(channel.unary_stream(path)(garbage, timeout=5, metadata=metadata))
                else:
                    channel.unary_unary(path)(garbage, timeout=5, metadata=metadata)
    with client_for(port) as client:
        client.wait_ready(5)
    assert _staging_files(store) == []


def test_device_info(agent) -> None:
    port, _ = agent
    with client_for(port) as client:
        info = client.info()
    assert info["arch"] and info["cpu_count"] >= 1 and info["memory_total_bytes"] > 0
    assert any(r["name"] == "onnxruntime" for r in info["runtimes"])
    assert info["suggested_target"] in ("x86_64", "x86_64-avx2", "arm64")


def _workers_python(root: Path) -> str:
    """A fresh venv (standard library only) with one runtime of its own: a stand-in onnxruntime 0.0.1 whose only
    provider is ProbeTestExecutionProvider. The agent's interpreter has the real one, torch and executorch."""
    venv.EnvBuilder(with_pip=False).create(root)
    site = next((root / "lib").glob("python3*/site-packages"))
    (site / "onnxruntime").mkdir()
    (site / "onnxruntime" / "__init__.py").write_text(
        "def get_available_providers():\n    return ['ProbeTestExecutionProvider']\n"
    )
    (site / "onnxruntime-0.0.1.dist-info").mkdir()
    (site / "onnxruntime-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime\nVersion: 0.0.1\n")
    return str(root / "bin" / "python")


def test_device_info_and_runs_follow_the_workers_python_not_the_agents(tmp_path: Path, token_file: Path) -> None:
    assert all(importlib.util.find_spec(m) for m in ("onnxruntime", "torch", "executorch.runtime"))  # the agent's
    python = _workers_python(tmp_path / "venv")
    torchscript = write_artifact(tmp_path / "ts", b"PK\x03\x04" + bytes(60), fmt="torchscript", input_shape=["batch", 4])
    pte = write_artifact(tmp_path / "pte", b"\0\0\0\0ET12" + bytes(60), fmt="executorch", input_shape=[1, 1, 28, 28])
    config = AgentConfig(listen="127.0.0.1:0", store=tmp_path / "store", token_file=token_file, worker_python=python)
    with run_server(config) as (_, port), client_for(port) as client:
        runtimes = [(r["name"], r["version"], r["providers"]) for r in client.info()["runtimes"]]
        assert runtimes == [("onnxruntime", "0.0.1", ["ProbeTestExecutionProvider"])]
        for artifact, named in ((torchscript, "TorchScript needs torch"), (pte, "needs the ExecuTorch runtime")):
            sha = client.push(artifact).sha256
            with pytest.raises(DeviceCallError) as refused:  # refused up front, not failed in a worker
                list(client.bench(sha, FAST, reconnects=0))
            assert refused.value.code == "FAILED_PRECONDITION" and named in refused.value.details
    # A workers' interpreter that cannot answer: no runtime claimed for it, and device info says why.
    config = AgentConfig(listen="127.0.0.1:0", store=tmp_path / "store2", token_file=token_file, worker_python="false")
    with run_server(config) as (_, port), client_for(port) as client:
        info = client.info()
    assert info["runtimes"] == []
    assert any("workers' Python false could not be asked which runtimes it has" in w for w in info["warnings"])


def test_worker_over_its_memory_limit_is_oom_and_the_agent_stays_up(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = AgentConfig(listen="127.0.0.1:0", store=tmp_path / "store", token_file=token_file, memory_limit_bytes=150 << 20)
    with run_server(config) as (_, port), client_for(port) as client:
        sha = client.push(write_artifact(tmp_path / "a", tiny_onnx_bytes())).sha256
        last = list(client.bench(sha, FAST))[-1]
        assert last["state"] == "RUN_STATE_FAILED" and last["error"]["code"] == "OOM", last
        client.wait_ready(5)


def test_a_run_that_outgrows_the_memory_limit_while_inferring_is_oom(tmp_path: Path, token_file: Path) -> None:
    # Expand to 2^29 x 4 floats (8 GiB) at inference, under a 3 GiB limit: ONNX Runtime's arena names the failed
    # allocation after a 300-character preamble, and the run used to be reported RUNTIME_ERROR.
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1 << 29, 4], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Expand", ["input", "shape"], ["y"])],
        "expand",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    artifact = write_artifact(tmp_path / "expand", model.SerializeToString(), input_shape=["batch", 4])
    config = AgentConfig(listen="127.0.0.1:0", store=tmp_path / "store", token_file=token_file, memory_limit_bytes=3 << 30)
    with run_server(config) as (_, port), client_for(port) as client:
        sha = client.push(artifact).sha256
        last = list(client.bench(sha, {**FAST, "timeout_seconds": 120}))[-1]
        assert last["state"] == "RUN_STATE_FAILED" and last["error"]["code"] == "OOM", last
        assert "--memory-limit-mb 3072" in last["error"]["message"]
        client.wait_ready(5)


def test_agent_bench_json_says_failure_and_exits_non_zero(agent, tmp_path: Path, monkeypatch) -> None:
    port, _store = agent
    folder = write_artifact(tmp_path / "a", tiny_onnx_bytes())
    token = tmp_path / "token-for-cli"
    token.write_text(TOKEN)
    monkeypatch.setenv("EDGE_AGENT_ENABLE_FAULTS", "1")
    monkeypatch.setenv("EDGE_AGENT_FAULT", "worker_abort")
    device = ["--device", f"127.0.0.1:{port}", "--token-file", str(token)]
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "bench", str(folder), *device, "--iterations", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    envelope = json.loads(proc.stdout)
    assert proc.returncode == 8 and envelope["exit_code"] == 8 and envelope["status"] == "partial"
    assert envelope["errors"] and envelope["errors"][0]["code"] == "WORKER_CRASHED"
    bad = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "info", "--device", f"127.0.0.1:{port}", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 7 and json.loads(bad.stdout)["errors"][0]["code"] == "UNAUTHENTICATED"


def test_a_long_journal_write_never_blocks_health_or_other_calls(tmp_path: Path, token_file: Path) -> None:
    # ListRuns used to read the journal on the event loop: while a compaction held the journal's lock (seconds at
    # the bound), one listing froze the whole server, health checks included.
    import threading
    import time

    config = AgentConfig(listen="127.0.0.1:0", store=tmp_path / "store", token_file=token_file)
    with run_server(config) as (agent, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        listing = []
        with agent.runs.journal._lock:  # what a compaction holds
            worker = threading.Thread(
                target=lambda: listing.append(
                    agent_pb2_grpc.EdgeAgentStub(channel).ListRuns(pb.ListRunsRequest(), timeout=30, metadata=metadata)
                )
            )
            worker.start()
            time.sleep(0.5)  # the listing is now waiting for the journal
            started = time.perf_counter()
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            info = agent_pb2_grpc.EdgeAgentStub(channel).GetDeviceInfo(pb.GetDeviceInfoRequest(), timeout=5, metadata=metadata)
            answered = time.perf_counter() - started
        worker.join(30)
    assert status == health_pb2.HealthCheckResponse.SERVING and info.cpu_count >= 1
    assert answered < 2.0
    assert len(listing) == 1  # and the listing completes once the journal is free
