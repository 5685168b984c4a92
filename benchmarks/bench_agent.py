"""What the agent costs, from one run on one machine (all on 127.0.0.1):

1. agent-reported p50 against the same artifact timed in-process with onnxruntime (same threads, iterations);
2. push throughput of a 50 MB artifact against a bare gRPC client stream of the same messages that stores
   nothing (interleaved rounds), and raw loopback TCP for scale;
3. the time of a re-push of an artifact the device already has (local sha256 check + one round trip);
4. the agent's idle RSS and its time from start to SERVING.

    python benchmarks/bench_agent.py [--json]

Shared 2-core machines are noisy: compare the ratios printed here, measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from edge_agent.contract.chunks import MAX_CHUNK_BYTES, iter_file_chunks
from edge_agent.host.client import AgentClient, Credentials
from edge_agent.v1 import agent_pb2 as pb
from edge_agent.worker.timing import measure

REPO_TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(REPO_TESTS)]
from agent_helpers import AgentProcess, rss_mib, tiny_onnx_bytes, write_artifact  # noqa: E402

TOKEN = "benchmark-token-0123456789"
PUSH_MB = 50


class BareSink:
    """A gRPC server that reads the same PushArtifact messages and stores nothing: the bound a push can reach."""

    def __init__(self) -> None:
        def sink(request_iterator, context):
            for _ in request_iterator:
                pass
            return b""

        handler = grpc.method_handlers_generic_handler("bench.Sink", {"Push": grpc.stream_unary_rpc_method_handler(sink)})
        self.server = grpc.server(
            futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", MAX_CHUNK_BYTES + (64 << 10))]
        )
        self.server.add_generic_rpc_handlers((handler,))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.push = self.channel.stream_unary("/bench.Sink/Push", request_serializer=lambda m: m.SerializeToString())

    def push_seconds(self, model: Path) -> float:
        header = pb.PushRequest(header=pb.PushHeader(sha256="0" * 64, size_bytes=model.stat().st_size, name="x"))

        def requests():
            yield header
            for offset, data in iter_file_chunks(model):
                yield pb.PushRequest(chunk=pb.Chunk(offset=offset, data=data))

        t0 = time.perf_counter()
        self.push(requests(), timeout=120)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)


def raw_tcp_mib_s(size: int, rounds: int) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(rounds):
            conn, _ = listener.accept()
            with conn:
                while conn.recv(1 << 20):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    payload = os.urandom(1 << 20)
    times = []
    for _ in range(rounds):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            t0 = time.perf_counter()
            for _ in range(size >> 20):
                sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)
            times.append(time.perf_counter() - t0)
    thread.join(10)
    listener.close()
    return size / 2**20 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        token = tmpdir / "token"
        token.write_text(TOKEN)
        agent = AgentProcess(tmpdir / "store", token)
        started = time.perf_counter()
        port = agent.start()
        start_s = time.perf_counter() - started
        proc = agent.proc
        try:
            time.sleep(1.0)
            figures["agent_start_to_serving_s"] = start_s
            figures["agent_idle_rss_mib"] = rss_mib(proc.pid)
            client = AgentClient(f"127.0.0.1:{port}", Credentials(token=TOKEN), timeout=120)

            # 1. agent p50 vs in-process onnxruntime, same model, threads, iterations; interleaved rounds
            for label, hidden in (("small", 448), ("medium", 4096)):
                folder = write_artifact(tmpdir / f"m-{label}", tiny_onnx_bytes(hidden))
                sha = client.push(folder).sha256
                settings = {"threads": 1, "iterations": 2000, "min_seconds": 3.0, "warmup_runs": 100, "warmup_min_seconds": 1.0}
                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
                session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
                x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
                agent_p50, local_p50 = [], []
                for _ in range(3):
                    agent_p50.append(list(client.bench(sha, settings))[-1]["result"]["latency"]["p50_ms"])
                    local = measure(
                        lambda s=session, x=x: s.run(None, {"input": x}),
                        warmup_runs=100,
                        warmup_min_seconds=1.0,
                        iterations=2000,
                        min_seconds=3.0,
                    )
                    local_p50.append(local.p50_ms)
                figures[f"p50_agent_ms_{label}"] = statistics.median(agent_p50)
                figures[f"p50_inprocess_ms_{label}"] = statistics.median(local_p50)
                figures[f"p50_ratio_agent_vs_inprocess_{label}"] = statistics.median(agent_p50) / statistics.median(local_p50)

            # 2. push throughput, 50 MB, in interleaved rounds against the bare stream
            big = write_artifact(tmpdir / "big", tiny_onnx_bytes(PUSH_MB * (1 << 20) // (784 * 4)))
            model = big / "model.onnx"
            size = model.stat().st_size
            sha = hashlib.sha256(model.read_bytes()).hexdigest()
            sink = BareSink()
            push_times, bare_times = [], []
            try:
                for _ in range(args.rounds):
                    if any(a["sha256"] == sha for a in client.list_artifacts()):
                        client.delete(sha)
                    t0 = time.perf_counter()
                    outcome = client.push(big)
                    push_times.append(time.perf_counter() - t0)
                    assert not outcome.already_present
                    bare_times.append(sink.push_seconds(model))
            finally:
                sink.close()
            figures["artifact_mb"] = size / 1e6
            figures["push_agent_mib_s"] = size / 2**20 / statistics.median(push_times)
            figures["push_bare_grpc_mib_s"] = size / 2**20 / statistics.median(bare_times)
            figures["push_ratio_agent_vs_bare"] = figures["push_agent_mib_s"] / figures["push_bare_grpc_mib_s"]
            figures["raw_tcp_mib_s"] = raw_tcp_mib_s(size, args.rounds)

            # 3. re-push of an artifact the device has
            repush = []
            for _ in range(args.rounds * 2):
                t0 = time.perf_counter()
                assert client.push(big).already_present
                repush.append(time.perf_counter() - t0)
            figures["repush_ms"] = statistics.median(repush) * 1000
            figures["agent_rss_after_work_mib"] = rss_mib(proc.pid)
            client.close()
        finally:
            agent.terminate()
            agent.close()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:<40} {value:10.3f}")


if __name__ == "__main__":
    main()
