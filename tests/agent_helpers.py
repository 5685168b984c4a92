"""Helpers shared by edge-opt's own tests and benchmarks (which put ``tests/`` on ``sys.path``): tiny real ONNX
models as artifact folders, the agent as a real subprocess, the store audit. Not part of the installed product.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge_agent.host.client import AgentClient, Credentials
from edge_agent.store.catalogue import MODEL_FILES

__all__ = ["FAST", "TOKEN", "AgentProcess", "audit_store", "client_for", "tiny_onnx_bytes", "wait_for", "write_artifact"]

TOKEN = "test-token-0123456789abcdef"


def client_for(port: int, token: str | None = TOKEN, timeout: float = 30.0) -> AgentClient:
    return AgentClient(f"127.0.0.1:{port}", Credentials(token=token), timeout=timeout)


FAST = {"iterations": 5, "min_seconds": 0.01, "warmup_runs": 1, "warmup_min_seconds": 0.01}


def audit_store(store: Path, acknowledged: dict[str, bytes]) -> None:
    """The 'nothing lost' audit: acknowledged artifacts intact, no commit debris, journal gapless."""
    for sha, content in acknowledged.items():
        folder = store / "artifacts" / sha
        model = next(p for p in folder.iterdir() if p.name.startswith("model."))
        assert hashlib.sha256(model.read_bytes()).hexdigest() == sha
        assert model.read_bytes() == content
    staging = store / "staging"
    assert not [p for p in staging.iterdir() if p.name.startswith(("commit-", "delete-"))] if staging.exists() else True
    journal = store / "runs" / "journal.jsonl"
    if journal.exists():
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        accepted = {e["run_id"] for e in entries if e["event"] == "accepted"}
        finished = [e["run_id"] for e in entries if e["event"] == "finished"]
        assert sorted(finished) == sorted(set(finished)), "a run finished twice"
        assert accepted == set(finished), "an accepted run has no terminal result"


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


def write_artifact(
    folder: Path,
    model_bytes: bytes,
    *,
    fmt: str = "onnx",
    precision: str = "fp32",
    input_shape: list | None = None,
    dtype: str = "float32",
    accuracy: float | None = None,
) -> Path:
    """An artifact folder as edge-export writes it: model file + manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    name = MODEL_FILES[fmt]
    (folder / name).write_bytes(model_bytes)
    manifest = {
        "schema_version": 1,
        "precision": precision,
        "format": fmt,
        "input": {"name": "input", "shape": input_shape or ["batch", 1, 28, 28], "dtype": dtype, "layout": "NCHW"},
        "target": {"torch_engine": "x86"},
        "file": {"name": name, "sha256": hashlib.sha256(model_bytes).hexdigest(), "size_bytes": len(model_bytes)},
    }
    if accuracy is not None:
        manifest["host_metrics"] = {"accuracy": accuracy}
        manifest["model"] = {"name": "tiny"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def tiny_onnx_bytes(hidden: int = 16) -> bytes:
    """A real 1x28x28 → 10 ONNX classifier (reshape, matmul, relu, matmul) built with the onnx helpers, no torch."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(hidden)
    w1 = numpy_helper.from_array(rng.standard_normal((784, hidden)).astype(np.float32) * 0.05, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 10)).astype(np.float32) * 0.05, "w2")
    shape = numpy_helper.from_array(np.array([-1, 784], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [w1, w2, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class AgentProcess:
    """``edge-agent serve`` as a real subprocess on a free port, so tests can SIGKILL it."""

    def __init__(
        self,
        store: Path,
        token_file: Path,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        args: tuple[str, ...] = (),
    ) -> None:
        self.python = python
        self.args = args
        self.store = store
        self.token_file = token_file
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self, timeout: float = 30.0) -> int:
        """Start the agent and wait until it answers: its port."""
        self.spawn()
        return self.wait_serving(timeout)

    def spawn(self, *, keep_stderr: bool = True) -> None:
        """Start the process without waiting (many agents can then start at once); ``wait_serving`` waits."""
        self.proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "edge_agent.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                str(self.store),
                "--token-file",
                str(self.token_file),
                "--grace",
                "2",
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL,
            text=True,
            env=self.env,
        )

    def wait_serving(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.stdout is None:
            raise RuntimeError("the agent was not spawned")
        line = self.proc.stdout.readline()  # "edge-agent: serving on 127.0.0.1:PORT ..."
        if "serving on" not in line:
            raise RuntimeError(f"agent did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.port = int(line.split("serving on ", 1)[1].split()[0].rsplit(":", 1)[1])
        token = self.token_file.read_text().strip()
        with AgentClient(f"127.0.0.1:{self.port}", Credentials(token=token)) as client:
            client.wait_ready(timeout)
        return self.port

    def kill(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def __enter__(self) -> AgentProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdout, self.proc.stderr) if self.proc else ():
            if stream:
                stream.close()


def rss_mib(pid: int) -> float:
    """A process's resident memory (``VmRSS``) in MiB; NaN when it has none to show."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
