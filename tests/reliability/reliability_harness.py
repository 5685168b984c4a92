"""The reliability suite's harness: the agent as a subprocess with any flags, raw pushes, probes and the audit.

Everything talks to 127.0.0.1 only. Every call carries a deadline; every process started here is killed by
:meth:`Agent.close` (the fixtures call it in teardown).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
from agent_helpers import FAST, TOKEN, tiny_onnx_bytes
from edge_agent.v1 import agent_pb2 as pb
from edge_agent.v1 import agent_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: The agent's flag that ends a push stream that sends nothing for this long, and the value the suite uses.
#: Adjust here if the agent names it differently.
IDLE_TIMEOUT_FLAG = "--idle-timeout"
IDLE_TIMEOUT_SECONDS = 3.0
#: Responsiveness bounds of the issue: health and cheap unary calls under load.
HEALTH_BOUND_S = 1.0
UNARY_BOUND_S = 2.0
#: Status codes that mean the agent failed to classify a client's input (never acceptable).
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
CHUNK = 1 << 20
_COUNTER = itertools.count(1)


def idle_args() -> list[str]:
    """The idle-timeout flag and the suite's value, when the agent has the flag."""
    return [IDLE_TIMEOUT_FLAG, f"{IDLE_TIMEOUT_SECONDS:g}"] if supports_flag(IDLE_TIMEOUT_FLAG) else []


class AgentStartError(RuntimeError):
    def __init__(self, returncode: int | None, output: str) -> None:
        super().__init__(f"agent did not start (exit {returncode}): {output[-2000:]}")
        self.returncode = returncode
        self.output = output


_HELP_CACHE: dict[str, str] = {}


def serve_help(python: str = sys.executable) -> str:
    if python not in _HELP_CACHE:
        proc = subprocess.run(
            [python, "-m", "edge_agent.cli", "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        _HELP_CACHE[python] = proc.stdout + proc.stderr
    return _HELP_CACHE[python]


def supports_flag(flag: str) -> bool:
    return flag in serve_help()


class Agent:
    """``edge-agent serve`` on 127.0.0.1:0 as a subprocess; output goes to files (a full pipe never blocks it)."""

    def __init__(
        self,
        store: Path,
        *,
        token_file: Path | None = None,
        args: Iterable[str] = (),
        grace: float = 2.0,
        env: dict[str, str] | None = None,
        logs: Path | None = None,
    ) -> None:
        self.store = store
        self.token_file = token_file
        self.args = list(args)
        self.grace = grace
        self.env = {**os.environ, **(env or {})}
        self.logs = logs or store.parent / f"agent-logs-{os.getpid()}-{next(_COUNTER)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._starts = 0

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "edge_agent.cli", "serve", "--listen", "127.0.0.1:0", "--store", str(self.store)]
        cmd += ["--grace", str(self.grace)]
        if self.token_file is not None:
            cmd += ["--token-file", str(self.token_file)]
        return cmd + self.args

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to serve."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        self.out_path = self.logs / f"start-{self._starts}.out"
        self.err_path = self.logs / f"start-{self._starts}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err, env=self.env)
        return self.proc

    def start(self, timeout: float = 60.0) -> int:
        proc = self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            if "serving on" in text:
                line = text.split("serving on ", 1)[1].split()[0]
                self.port = int(line.rsplit(":", 1)[1])
                wait_serving(self.port, timeout=max(1.0, deadline - time.monotonic()))
                return self.port
            if proc.poll() is not None:
                raise AgentStartError(proc.returncode, self.output())
            time.sleep(0.05)
        raise AgentStartError(None, self.output())

    def output(self) -> str:
        parts = []
        for i in range(1, self._starts + 1):
            for suffix in ("out", "err"):
                path = self.logs / f"start-{i}.{suffix}"
                if path.exists():
                    parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def terminate(self, timeout: float = 90.0) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def restart(self) -> int:
        self.kill()
        return self.start()

    def close(self) -> None:
        self.kill()


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 16 << 20)])


def auth(token: str | None = TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def stub(ch: grpc.Channel) -> agent_pb2_grpc.EdgeAgentStub:
    return agent_pb2_grpc.EdgeAgentStub(ch)


def health_status(port: int, timeout: float = 2.0) -> int | None:
    with channel(port) as ch:
        try:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError:
            return None


def wait_serving(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_status(port) == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.1)
    raise TimeoutError(f"agent on port {port} not SERVING after {timeout:g} s")


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
    except grpc.RpcError as exc:
        value = exc
    return time.perf_counter() - started, value


class Prober:
    """Health and unary probes on their own channel; keeps every latency (a timed-out probe counts its deadline)."""

    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.channel = channel(port)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.stub = stub(self.channel)
        self.metadata = auth(token)
        self.health_s: list[float] = []
        self.unary_s: dict[str, list[float]] = {}
        self.failures: list[str] = []

    def health_once(self, deadline: float = 3.0) -> float:
        seconds, reply = timed(self.health.Check, health_pb2.HealthCheckRequest(), timeout=deadline)
        if isinstance(reply, grpc.RpcError):
            self.failures.append(f"health: {reply.code().name}")
        self.health_s.append(seconds)
        return seconds

    def unary_once(self, name: str, request, deadline: float = 3.0) -> float:
        seconds, reply = timed(getattr(self.stub, name), request, timeout=deadline, metadata=self.metadata)
        if isinstance(reply, grpc.RpcError) and reply.code() != grpc.StatusCode.NOT_FOUND:
            self.failures.append(f"{name}: {reply.code().name}")
        self.unary_s.setdefault(name, []).append(seconds)
        return seconds

    def warm_up(self) -> None:
        """One call of each probe before the load starts: a first call's one-off cost (device probing) is not load."""
        self.round()
        self.health_s.clear()
        self.unary_s.clear()
        self.failures.clear()

    def round(self, get_run: str | None = None) -> None:
        self.health_once()
        self.unary_once("ListArtifacts", pb.ListArtifactsRequest())
        self.unary_once("GetDeviceInfo", pb.GetDeviceInfoRequest())
        if get_run:
            self.unary_once("GetRun", pb.GetRunRequest(run_id=get_run))

    def close(self) -> None:
        self.channel.close()


# ----- artifacts and pushes ----------------------------------------------------------------------------------
def manifest_for(data: bytes, fmt: str = "onnx", precision: str = "fp32") -> str:
    name = {"onnx": "model.onnx", "torchscript": "model.pt", "litert": "model.tflite"}[fmt]
    return json.dumps(
        {
            "schema_version": 1,
            "precision": precision,
            "format": fmt,
            "input": {"name": "input", "shape": ["batch", 1, 28, 28], "dtype": "float32", "layout": "NCHW"},
            "target": {"torch_engine": "x86"},
            "file": {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)},
        }
    )


def push_requests(
    data: bytes, *, name: str = "m", offset: int = 0, manifest: str | None = None, chunk: int = CHUNK
) -> Iterator[pb.PushRequest]:
    sha = hashlib.sha256(data).hexdigest()
    header = pb.PushHeader(
        sha256=sha, size_bytes=len(data), name=name, manifest_json=manifest or manifest_for(data), offset=offset
    )
    yield pb.PushRequest(header=header)
    for start in range(offset, len(data), chunk):
        yield pb.PushRequest(chunk=pb.Chunk(offset=start, data=data[start : start + chunk]))


def push_raw(port: int, data: bytes, *, timeout: float = 60.0, token: str | None = TOKEN, **kwargs) -> pb.PushResponse:
    """One push stream; raises grpc.RpcError with the agent's status."""
    with channel(port) as ch:
        return stub(ch).PushArtifact(push_requests(data, **kwargs), timeout=timeout, metadata=auth(token))


def push_with_resume(port: int, data: bytes, within: float = 60.0, *, timeout: float = 60.0) -> pb.PushResponse:
    """What a client does when its connection breaks: ask what the device has staged, send the rest; retry for
    ``within`` seconds (a push the agent still holds as in progress gives FAILED_PRECONDITION until it ends)."""
    sha = hashlib.sha256(data).hexdigest()
    last: grpc.RpcError | None = None
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            with channel(port) as ch:
                s = stub(ch)
                stat = s.StatArtifact(pb.StatArtifactRequest(sha256=sha), timeout=10, metadata=auth())
                if stat.present:
                    return pb.PushResponse(artifact=stat.artifact, already_present=True)
                return s.PushArtifact(push_requests(data, offset=stat.staged_bytes), timeout=timeout, metadata=auth())
        except grpc.RpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.CANCELLED,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.FAILED_PRECONDITION,
            ):
                raise
            last = exc
            time.sleep(0.3)
    assert last is not None
    raise last


def unique_model(tag: int | None = None) -> bytes:
    """A small valid ONNX classifier with its own sha256."""
    return tiny_onnx_bytes(4 + (tag if tag is not None else next(_COUNTER) + os.getpid() % 1000))


def run_to_end(
    port: int,
    sha: str,
    settings: dict | None = None,
    run_id: str | None = None,
    timeout: float = 120.0,
    token: str | None = TOKEN,
) -> list:
    request = pb.RunBenchmarkRequest(run_id=run_id or "", sha256=sha)

    json_format.ParseDict(settings if settings is not None else FAST, request.settings)
    with channel(port) as ch:
        return list(stub(ch).RunBenchmark(request, timeout=timeout, metadata=auth(token)))


def get_run(port: int, run_id: str, timeout: float = 10.0) -> pb.RunRecord:
    with channel(port) as ch:
        return stub(ch).GetRun(pb.GetRunRequest(run_id=run_id), timeout=timeout, metadata=auth())


TERMINAL = {pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_FAILED, pb.RUN_STATE_TIMED_OUT, pb.RUN_STATE_INTERRUPTED}


def wait_terminal(port: int, run_id: str, timeout: float = 90.0) -> pb.RunRecord:
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        try:
            record = get_run(port, run_id)
            if record.state in TERMINAL:
                return record
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} has no terminal state after {timeout:g} s: {record}")


# ----- the "nothing lost" audit ------------------------------------------------------------------------------
def journal_entries(store: Path) -> tuple[list[dict], int]:
    """The journal's well-formed entries and the count of lines that are not entries."""
    path = store / "runs" / "journal.jsonl"
    if not path.exists():
        return [], 0
    entries, bad = [], 0
    for line in path.read_bytes().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(entry, dict) and {"seq", "run_id", "event"} <= set(entry):
            entries.append(entry)
        else:
            bad += 1
    return entries, bad


def nothing_lost(
    port: int,
    store: Path,
    acknowledged: dict[str, bytes] | None = None,
    accepted_runs: Iterable[str] = (),
    *,
    live_uploads: Iterable[str] = (),
    allow_bad_journal_lines: bool = False,
    round_trip: bool = True,
    token: str | None = TOKEN,
) -> None:
    """(a) every acknowledged artifact present, byte for byte; (b) staging holds only live resumable uploads;
    (c) each accepted run has exactly one terminal result (journal and GetRun); (d) SERVING, and a fresh
    push + benchmark round trip succeeds."""
    acknowledged = acknowledged or {}
    with channel(port) as ch:
        s = stub(ch)
        listed = {a.sha256: a for a in s.ListArtifacts(pb.ListArtifactsRequest(), timeout=10, metadata=auth(token)).artifacts}
        for sha, content in acknowledged.items():
            assert sha in listed, f"acknowledged artifact {sha} is not listed"
            folder = store / "artifacts" / sha
            models = [p for p in folder.iterdir() if p.name.startswith("model.")]
            assert len(models) == 1, f"{folder}: {sorted(p.name for p in folder.iterdir())}"
            on_disk = models[0].read_bytes()
            assert hashlib.sha256(on_disk).hexdigest() == sha and on_disk == content
        staging = store / "staging"
        allowed = {f"{sha}.part" for sha in live_uploads}
        if staging.exists():
            debris = sorted(p.name for p in staging.iterdir() if p.name not in allowed and not p.name.endswith(".part"))
            assert not debris, f"staging holds debris: {debris}"
            unexpected = [p.name for p in staging.iterdir() if p.name.endswith(".part") and p.name not in allowed]
            if not live_uploads:
                # no upload is meant to be live: only resumable parts of pushes cut short may remain
                for name in unexpected:
                    assert len(name) == 64 + len(".part"), f"staging holds {name}"
        entries, bad = journal_entries(store)
        if not allow_bad_journal_lines:
            assert bad == 0, f"the journal holds {bad} line(s) that are not entries"
        seqs = [e["seq"] for e in entries]
        assert seqs == sorted(set(seqs)), f"journal seq not strictly increasing: {seqs}"
        accepted = {e["run_id"] for e in entries if e["event"] == "accepted"} | set(accepted_runs)
        finished: dict[str, int] = {}
        for e in entries:
            if e["event"] == "finished":
                finished[e["run_id"]] = finished.get(e["run_id"], 0) + 1
        for run_id in accepted:
            assert finished.get(run_id) == 1, f"run {run_id} has {finished.get(run_id, 0)} terminal entries"
            record = s.GetRun(pb.GetRunRequest(run_id=run_id), timeout=10, metadata=auth(token))
            assert record.state in TERMINAL, f"run {run_id} is {pb.RunState.Name(record.state)}"
    wait_serving(port, timeout=15)
    if round_trip:
        data = unique_model()
        reply = push_raw(port, data, name="audit", token=token)
        assert reply.artifact.sha256 == hashlib.sha256(data).hexdigest()
        events = run_to_end(port, reply.artifact.sha256, token=token)
        assert events and events[-1].state == pb.RUN_STATE_SUCCEEDED, events[-1] if events else "no events"


def threads_running(fn, items: Iterable) -> list:
    """Run fn(item) in one thread each; returns the results (or the exceptions) in order."""
    items = list(items)
    results: list = [None] * len(items)

    def work(i: int, item) -> None:
        try:
            results[i] = fn(item)
        except Exception as exc:  # collected for the caller's assertions
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i, item), daemon=True) for i, item in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


class Follower:
    """Reads one RunBenchmark stream in a thread, keeping every event (and the error that ended it, if any)."""

    def __init__(self, port: int, sha: str, run_id: str, settings: dict) -> None:
        self.events: list[pb.RunEvent] = []
        self.error: grpc.RpcError | None = None
        request = pb.RunBenchmarkRequest(run_id=run_id, sha256=sha)
        json_format.ParseDict(settings, request.settings)
        self.thread = threading.Thread(target=self._follow, args=(port, request), daemon=True)
        self.thread.start()

    def _follow(self, port: int, request: pb.RunBenchmarkRequest) -> None:
        try:
            with channel(port) as ch:
                for event in stub(ch).RunBenchmark(request, timeout=120, metadata=auth()):
                    self.events.append(event)
        except grpc.RpcError as exc:
            self.error = exc

    def wait_for(self, predicate, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(predicate(e) for e in self.events):
                return
            if not self.thread.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"event not seen: {self.events[-3:]} {self.error}")
