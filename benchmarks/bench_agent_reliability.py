"""What the agent holds as a daemon, from one run on this machine (everything on 127.0.0.1, a few minutes):

1. load held: stalled push streams, a burst of queued benchmarks, concurrent pushes against a quota,
   unauthenticated health watches, a thousand idle connections (the agent started with a service's soft limit of
   1,024 open files), with the health check's latency (p50 / max) during each; and memory held: the agent's RSS and
   journal size after many runs that keep 20,000 latency samples each, with ``--keep-runs``;
2. faults survived: connection resets mid-push and mid-stream (a TCP proxy), the agent SIGKILLed mid-push and
   mid-benchmark, a full disk mid-push (a tmpfs; skipped when it cannot be mounted);
3. bad inputs tried: hostile ONNX models, malformed manifests and settings, fuzzed requests of every method:
   how many were refused cleanly and how many produced UNKNOWN or INTERNAL (must be 0);
4. results and artifact bytes lost (must be 0).

    python benchmarks/bench_agent_reliability.py [--json] [--quick]

Exits 1 if any UNKNOWN / INTERNAL or any loss was seen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]

from agent_helpers import FAST, TOKEN, rss_mib, tiny_onnx_bytes  # noqa: E402
from edge_agent.v1 import agent_pb2 as pb  # noqa: E402
from google.protobuf import json_format, message_factory  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from reliability.hostile_onnx import hostile_models  # noqa: E402
from reliability.reliability_harness import (  # noqa: E402
    NEVER,
    TERMINAL,
    Agent,
    auth,
    channel,
    idle_args,
    journal_entries,
    manifest_for,
    push_raw,
    push_with_resume,
    stub,
)
from reliability.tcp_proxy import TcpProxy  # noqa: E402

SERVICE = pb.DESCRIPTOR.services_by_name["EdgeAgent"]
TIME_BUDGET_S = 600


class Tally:
    def __init__(self) -> None:
        self.load: list[dict] = []
        self.faults: dict[str, list[int]] = {}  # kind -> [tried, survived]
        #: accepted: a request the agent took (a fuzzed request may well be valid); hostile_accepted: a bad input
        #: the contract says must be refused (a hostile model, a malformed manifest or setting) that was taken.
        self.bad_inputs = {"tried": 0, "refused_cleanly": 0, "accepted": 0, "hostile_accepted": 0, "unknown_or_internal": 0}
        self.unknown_examples: list[str] = []
        self.hostile_examples: list[str] = []
        self.results_lost = 0
        self.bytes_lost = 0
        self.notes: list[str] = []
        self.step_errors = 0
        self.memory: dict = {}

    def fault(self, kind: str, survived: bool) -> None:
        tried_survived = self.faults.setdefault(kind, [0, 0])
        tried_survived[0] += 1
        tried_survived[1] += int(survived)

    def bad(self, what: str, code: grpc.StatusCode | None) -> None:
        self.bad_inputs["tried"] += 1
        if code is None or code == grpc.StatusCode.OK:
            self.bad_inputs["accepted"] += 1
            self.bad_inputs["hostile_accepted"] += 1
            self.hostile_examples.append(what)
        elif code in NEVER:
            self.bad_inputs["unknown_or_internal"] += 1
            self.unknown_examples.append(f"{what}: {code.name}")
        else:
            self.bad_inputs["refused_cleanly"] += 1


class HealthSampler:
    """Health checks every 0.2 s in a thread; a check that misses its 3 s deadline counts as 3 s."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[float] = []
        self.timeouts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with channel(self.port) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    health.Check(health_pb2.HealthCheckRequest(), timeout=3)
                except grpc.RpcError:
                    self.timeouts += 1
                self.samples.append(time.perf_counter() - started)
                self._stop.wait(0.2)

    def __enter__(self) -> HealthSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def row(self, scenario: str, held: str) -> dict:
        s = self.samples or [math.nan]
        return {
            "scenario": scenario,
            "held": held,
            "health_p50_ms": statistics.median(s) * 1000,
            "health_max_ms": max(s) * 1000,
            "health_failures": self.timeouts,
        }


def count_losses(tally: Tally, agent: Agent, acknowledged: dict[str, bytes], accepted: set[str]) -> None:
    """Artifact bytes and results lost: the audit of the tests, counted instead of asserted."""
    for sha, content in acknowledged.items():
        models = list((agent.store / "artifacts" / sha).glob("model.*"))
        if len(models) != 1 or models[0].read_bytes() != content:
            tally.bytes_lost += len(content)
    entries, _bad = journal_entries(agent.store)
    accepted = accepted | {e["run_id"] for e in entries if e["event"] == "accepted"}
    with channel(agent.port) as ch:
        for run_id in accepted:
            try:
                record = stub(ch).GetRun(pb.GetRunRequest(run_id=run_id), timeout=10, metadata=auth())
                finished = sum(1 for e in entries if e["run_id"] == run_id and e["event"] == "finished")
                if record.state not in TERMINAL or finished != 1:
                    tally.results_lost += 1
            except grpc.RpcError:
                tally.results_lost += 1


def new_agent(
    root: Path, name: str, args: tuple[str, ...] = (), grace: float = 2.0, prefix: tuple[str, ...] = ()
) -> Agent:
    """An agent on a store of its own; ``prefix`` wraps its command (``prlimit ...``)."""
    token_file = root / "token"
    token_file.write_text(TOKEN)
    agent = Agent(root / name, token_file=token_file, args=list(args), grace=grace)
    if prefix:
        command = agent.command
        agent.command = lambda: [*prefix, *command()]  # type: ignore[method-assign]
    agent.start()
    return agent


def bench_run(port: int, sha: str, run_id: str, settings: dict | None = None, timeout: float = 120) -> object:
    request = pb.RunBenchmarkRequest(run_id=run_id, sha256=sha)
    json_format.ParseDict(settings or FAST, request.settings)
    try:
        with channel(port) as ch:
            return list(stub(ch).RunBenchmark(request, timeout=timeout, metadata=auth()))[-1]
    except grpc.RpcError as exc:
        return exc.code()


# ----- 1. load held ------------------------------------------------------------------------------------------
def load_stalled(tally: Tally, root: Path, streams: int) -> None:
    agent = new_agent(root, "stalled")
    release = threading.Event()

    def stalled(i: int):
        sha = hashlib.sha256(os.urandom(16)).hexdigest()
        manifest = {"format": "onnx", "precision": "fp32", "file": {"name": "model.onnx", "sha256": sha, "size_bytes": 1 << 20}}
        yield pb.PushRequest(
            header=pb.PushHeader(sha256=sha, size_bytes=1 << 20, name=f"s{i}", manifest_json=json.dumps(manifest))
        )
        release.wait(60)

    ch = channel(agent.port)
    futures = [stub(ch).PushArtifact.future(stalled(i), timeout=60, metadata=auth()) for i in range(streams)]
    try:
        time.sleep(1)
        with HealthSampler(agent.port) as sampler:
            time.sleep(4)
        tally.load.append(sampler.row("stalled push streams", f"{streams} streams"))
    finally:
        release.set()
        for f in futures:
            f.cancel()
        ch.close()
        count_losses(tally, agent, {}, set())
        agent.close()


def load_burst(tally: Tally, root: Path, runs: int) -> None:
    agent = new_agent(root, "burst")
    try:
        data = tiny_onnx_bytes(12)
        sha = push_raw(agent.port, data).artifact.sha256
        outcomes: dict[str, object] = {}
        threads = [
            threading.Thread(target=lambda i=i: outcomes.__setitem__(f"b{i}", bench_run(agent.port, sha, f"b{i}", timeout=240)))
            for i in range(runs)
        ]
        with HealthSampler(agent.port) as sampler:
            for t in threads:
                t.start()
            for t in threads:
                t.join(240)
        accepted = {r for r, o in outcomes.items() if not isinstance(o, grpc.StatusCode)}
        refused = [o for o in outcomes.values() if isinstance(o, grpc.StatusCode)]
        row = sampler.row("queued benchmark burst", f"{runs} calls: {len(accepted)} ran, {len(refused)} refused")
        tally.load.append(row)
        for code in refused:
            tally.bad("burst", code) if code in NEVER else None
        count_losses(tally, agent, {sha: data}, accepted)
    finally:
        agent.close()


def load_quota(tally: Tally, root: Path, pushes: int, quota_mb: int = 40) -> None:
    agent = new_agent(root, "quota", ("--quota-mb", str(quota_mb)))
    try:
        models = [tiny_onnx_bytes(1671 + i) for i in range(pushes)]
        results: list[object] = [None] * pushes

        def push(i: int) -> None:
            try:
                results[i] = push_raw(agent.port, models[i], timeout=120)
            except grpc.RpcError as exc:
                results[i] = exc.code()

        threads = [threading.Thread(target=push, args=(i,)) for i in range(pushes)]
        with HealthSampler(agent.port) as sampler:
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
        committed = {
            hashlib.sha256(m).hexdigest(): m for m, r in zip(models, results, strict=True) if isinstance(r, pb.PushResponse)
        }
        total = sum(len(m) for m in committed.values())
        row = sampler.row("concurrent 5 MiB pushes", f"{pushes} pushes, {len(committed)} committed")
        row["committed_mib"] = total / (1 << 20)
        row["quota_mib"] = quota_mb
        row["quota_held"] = total <= quota_mb << 20
        tally.load.append(row)
        for r in results:
            if isinstance(r, grpc.StatusCode) and r in NEVER:
                tally.bad("quota push", r)
        count_losses(tally, agent, committed, set())
    finally:
        agent.close()


def load_watches(tally: Tally, root: Path, watches: int) -> None:
    """Unauthenticated health watches from one address, then the token holder pushes and benchmarks."""
    agent = new_agent(root, "watches")
    ch = channel(agent.port)
    opened: list = []
    refused = 0
    try:
        with HealthSampler(agent.port) as sampler:
            for _ in range(watches):
                call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=120)
                try:
                    next(call)
                    opened.append(call)
                except grpc.RpcError:
                    refused += 1
            data = tiny_onnx_bytes(13)
            sha = push_raw(agent.port, data).artifact.sha256
            outcome = bench_run(agent.port, sha, "beside-watches")
        served = not isinstance(outcome, grpc.StatusCode) and outcome.WhichOneof("kind") == "result"
        held = f"{watches} watches: {len(opened)} open, {refused} refused; token holder {'served' if served else 'REFUSED'}"
        tally.load.append(sampler.row("unauthenticated watches", held))
        if not served:
            tally.notes.append(f"the token holder was refused beside {len(opened)} health watches: {outcome}")
            tally.step_errors += 1
        count_losses(tally, agent, {sha: data}, {"beside-watches"})
    finally:
        for call in opened:
            call.cancel()
        ch.close()
        agent.close()


def load_connections(tally: Tally, root: Path, connections: int) -> None:
    """Idle HTTP/2 connections (preface and SETTINGS, then nothing), the agent under a soft limit of 1,024 files."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    agent = new_agent(root, "connections", prefix=("prlimit", f"--nofile=1024:{hard}", "--"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, connections + 512)), hard))
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    sockets = []
    try:
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
            s.sendall(preface)
            sockets.append(s)
        with HealthSampler(agent.port) as sampler:
            time.sleep(4)
        tally.load.append(sampler.row("idle connections", f"{connections} connections (agent soft limit 1,024)"))
        count_losses(tally, agent, {}, set())
    finally:
        for s in sockets:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        agent.close()


def memory_held(tally: Tally, root: Path, runs: int, keep: int) -> None:
    """RSS and journal size after ``runs`` benchmarks keeping 20,000 samples each, the journal keeping ``keep``."""
    agent = new_agent(root, "memory", ("--keep-runs", str(keep)))
    try:
        data = tiny_onnx_bytes(14)
        sha = push_raw(agent.port, data).artifact.sha256
        before = rss_mib(agent.proc.pid)
        settings = {"iterations": 20000, "min_seconds": 0.001, "warmup_runs": 5, "keep_samples": True}
        finished = 0
        for i in range(runs):
            outcome = bench_run(agent.port, sha, f"m{i}", settings, timeout=240)
            finished += not isinstance(outcome, grpc.StatusCode) and outcome.WhichOneof("kind") == "result"
        after = rss_mib(agent.proc.pid)
        journal = agent.store / "runs" / "journal.jsonl"
        kept = len(journal.read_bytes().splitlines())
        tally.memory = {
            "runs": runs,
            "succeeded": finished,
            "keep_runs": keep,
            "rss_before_mib": before,
            "rss_after_mib": after,
            "journal_mib": journal.stat().st_size / (1 << 20),
            "journal_lines": kept,
        }
        count_losses(tally, agent, {sha: data}, set())
    finally:
        agent.close()


# ----- 2. faults survived ------------------------------------------------------------------------------------
def faults(tally: Tally, root: Path) -> None:
    agent = new_agent(root, "faults", tuple(idle_args()))
    acknowledged: dict[str, bytes] = {}
    accepted: set[str] = set()
    try:
        data = tiny_onnx_bytes(3200)
        with TcpProxy(agent.port) as proxy:
            proxy.cut_after(2 << 20, 5 << 20, 8 << 20)
            try:
                reply = push_with_resume(proxy.port, data, within=90)
                ok = reply.artifact.sha256 == hashlib.sha256(data).hexdigest()
            except grpc.RpcError as exc:
                tally.notes.append(f"push through resets: {exc.code().name}: {exc.details()}"[:300])
                ok = False
            for _ in range(proxy.cuts):
                tally.fault("connection reset mid-push", ok)
        if ok:
            acknowledged[hashlib.sha256(data).hexdigest()] = data
        sha = push_raw(agent.port, tiny_onnx_bytes(18)).artifact.sha256
        acknowledged[sha] = tiny_onnx_bytes(18)
        accepted.add("proxy-run")
        _reset_mid_stream(tally, agent, sha)
        # the agent SIGKILLed mid-push, then the push resumed
        big = tiny_onnx_bytes(3300)
        header_sent = threading.Event()

        def slow():
            yield from _push_messages(big, stop_after=3, flag=header_sent)

        ch = channel(agent.port)
        future = stub(ch).PushArtifact.future(slow(), timeout=60, metadata=auth())
        header_sent.wait(20)
        time.sleep(0.5)
        agent.kill()
        future.cancel()
        ch.close()
        agent.start()
        try:
            ok = push_with_resume(agent.port, big).artifact.sha256 == hashlib.sha256(big).hexdigest()
        except grpc.RpcError:
            ok = False
        tally.fault("agent SIGKILL mid-push", ok)
        if ok:
            acknowledged[hashlib.sha256(big).hexdigest()] = big
        accepted.add("killed-run")
        _kill_mid_benchmark(tally, agent, sha)
        count_losses(tally, agent, acknowledged, accepted)
    finally:
        agent.close()
    disk_full(tally, root)


def _reset_mid_stream(tally: Tally, agent: Agent, sha: str) -> None:
    with TcpProxy(agent.port) as proxy:
        request = pb.RunBenchmarkRequest(run_id="proxy-run", sha256=sha)
        json_format.ParseDict({"iterations": 100, "min_seconds": 2, "warmup_runs": 1}, request.settings)
        last = None
        for _ in range(6):
            try:
                with channel(proxy.port) as ch:
                    for event in stub(ch).RunBenchmark(request, timeout=10, metadata=auth()):
                        last = event
                        if event.WhichOneof("kind") == "progress" and proxy.cuts == 0:
                            proxy.cut_all()
                if last is not None and last.WhichOneof("kind") in ("result", "error"):
                    break
            except grpc.RpcError:
                time.sleep(0.5)
        tally.fault("connection reset mid-benchmark-stream", last is not None and last.state == pb.RUN_STATE_SUCCEEDED)


def _kill_mid_benchmark(tally: Tally, agent: Agent, sha: str) -> None:
    # the agent SIGKILLed mid-benchmark: INTERRUPTED on restart, never re-run
    started = threading.Event()

    def follow() -> None:
        request = pb.RunBenchmarkRequest(run_id="killed-run", sha256=sha)
        json_format.ParseDict({"iterations": 100, "min_seconds": 30}, request.settings)
        try:
            with channel(agent.port) as ch2:
                for event in stub(ch2).RunBenchmark(request, timeout=60, metadata=auth()):
                    if event.WhichOneof("kind") == "progress":
                        started.set()
        except grpc.RpcError:
            pass

    threading.Thread(target=follow, daemon=True).start()
    started.wait(30)
    agent.kill()
    agent.start()
    try:
        with channel(agent.port) as ch3:
            state = stub(ch3).GetRun(pb.GetRunRequest(run_id="killed-run"), timeout=10, metadata=auth()).state
        tally.fault("agent SIGKILL mid-benchmark", state == pb.RUN_STATE_INTERRUPTED)
    except grpc.RpcError:
        tally.fault("agent SIGKILL mid-benchmark", False)


def _push_messages(data: bytes, stop_after: int, flag: threading.Event):
    sha = hashlib.sha256(data).hexdigest()
    header = pb.PushHeader(sha256=sha, size_bytes=len(data), name="k", manifest_json=manifest_for(data))
    yield pb.PushRequest(header=header)
    for n, start in enumerate(range(0, len(data), 1 << 20)):
        if n == stop_after:
            flag.set()
            time.sleep(30)
            return
        yield pb.PushRequest(chunk=pb.Chunk(offset=start, data=data[start : start + (1 << 20)]))


def disk_full(tally: Tally, root: Path) -> None:
    mount = root / "tmpfs"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount)], capture_output=True, check=False)
    if proc.returncode != 0:
        tally.notes.append("disk full: skipped (cannot mount a tmpfs; needs root)")
        return
    agent = None
    try:
        agent = new_agent(mount, "store")
        data = tiny_onnx_bytes(3001)
        flag = threading.Event()
        go = threading.Event()

        def messages():
            sha = hashlib.sha256(data).hexdigest()
            yield pb.PushRequest(
                header=pb.PushHeader(sha256=sha, size_bytes=len(data), name="f", manifest_json=manifest_for(data))
            )
            for start in range(0, len(data), 1 << 20):
                if start == 1 << 20:
                    flag.set()
                    go.wait(30)
                yield pb.PushRequest(chunk=pb.Chunk(offset=start, data=data[start : start + (1 << 20)]))

        ch = channel(agent.port)
        future = stub(ch).PushArtifact.future(messages(), timeout=60, metadata=auth())
        flag.wait(20)
        time.sleep(0.5)
        filler = mount / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for block in (1 << 20, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * block)
                except OSError:
                    pass
        finally:
            os.close(fd)
        go.set()
        try:
            future.result(60)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        ch.close()
        filler.unlink()
        if code in NEVER:
            tally.bad("disk full mid-push", code)
        try:
            ok = push_with_resume(agent.port, data).artifact.sha256 == hashlib.sha256(data).hexdigest()
        except grpc.RpcError:
            ok = False
        tally.fault("disk full mid-push", code == grpc.StatusCode.RESOURCE_EXHAUSTED and ok)
        count_losses(tally, agent, {hashlib.sha256(data).hexdigest(): data} if ok else {}, set())
    finally:
        if agent is not None:
            agent.close()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


# ----- 3. bad inputs -----------------------------------------------------------------------------------------
def bad_inputs(tally: Tally, root: Path, fuzz_examples: int) -> None:
    agent = new_agent(root, "bad", ("--max-queue", "64"))
    try:
        for name, data in hostile_models().items():
            for attempt in range(2):
                try:
                    push_raw(agent.port, data, name="hostile", timeout=30)
                    tally.bad(f"hostile model {name}", None)
                except grpc.RpcError as exc:
                    tally.bad(f"hostile model {name} (push {attempt + 1})", exc.code())
        model = tiny_onnx_bytes(24)
        sha = push_raw(agent.port, model).artifact.sha256
        good = json.loads(manifest_for(model))
        manifests = {
            "file is a string": {**good, "file": "model.onnx"},
            "format is a list": {**good, "format": ["onnx"]},
            "precision is an object": {**good, "precision": {}},
        }
        other = tiny_onnx_bytes(25)
        for what, manifest in manifests.items():
            text = json.dumps(manifest).replace(sha, hashlib.sha256(other).hexdigest())
            try:
                push_raw(agent.port, other, manifest=text)
                tally.bad(f"manifest {what}", None)
            except grpc.RpcError as exc:
                tally.bad(f"manifest {what}", exc.code())
        try:
            push_raw(agent.port, other, manifest="[" * 100_000 + "]" * 100_000)
            tally.bad("manifest nested 100000 deep", None)
        except grpc.RpcError as exc:
            tally.bad("manifest nested 100000 deep", exc.code())
        for i, settings in enumerate(
            [
                {"min_seconds": math.nan},
                {"timeout_seconds": math.inf},
                {"warmup_min_seconds": -math.inf},
                {"iterations": 2**31 - 1},
            ]
        ):
            request = pb.RunBenchmarkRequest(run_id=f"bad-settings-{i}", sha256=sha)
            for key, value in settings.items():
                setattr(request.settings, key, value)
            try:
                with channel(agent.port) as ch:
                    list(stub(ch).RunBenchmark(request, timeout=20, metadata=auth()))
                tally.bad(f"settings {settings}", None)
            except grpc.RpcError as exc:
                tally.bad(f"settings {settings}", exc.code())
        fuzz(tally, agent, sha, len(model), fuzz_examples)
        agent.kill()  # fuzzed runs end INTERRUPTED
        agent.start()
        count_losses(tally, agent, {}, set())
    finally:
        agent.close()


def _fuzz_one(tally: Tally, agent: Agent, method, path: str, kwargs: dict, strategy, examples: int):
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(message=strategy)
    def one(message) -> None:
        code = grpc.StatusCode.OK
        with channel(agent.port) as ch:
            try:
                if method.client_streaming:
                    ch.stream_unary(path, **kwargs)(iter([message]), timeout=20, metadata=auth())
                elif method.server_streaming:
                    stream = ch.unary_stream(path, **kwargs)(message, timeout=20, metadata=auth())
                    next(stream, None)
                    stream.cancel()
                else:
                    ch.unary_unary(path, **kwargs)(message, timeout=20, metadata=auth())
            except grpc.RpcError as exc:
                code = exc.code() if exc.code() != grpc.StatusCode.CANCELLED else grpc.StatusCode.OK
        if code != grpc.StatusCode.OK:
            tally.bad(f"fuzzed {method.name}", code)
        else:  # a fuzzed request may be valid
            tally.bad_inputs["tried"] += 1
            tally.bad_inputs["accepted"] += 1

    return one


def fuzz(tally: Tally, agent: Agent, sha: str, size: int, examples: int) -> None:
    from reliability.request_fuzz import message_strategy

    for method in SERVICE.methods:
        in_class = message_factory.GetMessageClass(method.input_type)
        out_class = message_factory.GetMessageClass(method.output_type)
        strategy = message_strategy(method.input_type, in_class, real_sha=sha, manifest_size=size)
        path = f"/{SERVICE.full_name}/{method.name}"
        kwargs = {"request_serializer": lambda m: m.SerializeToString(), "response_deserializer": out_class.FromString}

        _fuzz_one(tally, agent, method, path, kwargs, strategy, examples)()


# ----- report ------------------------------------------------------------------------------------------------
def report(tally: Tally, seconds: float, as_json: bool) -> int:
    b = tally.bad_inputs
    failed = b["unknown_or_internal"] > 0 or b["hostile_accepted"] > 0
    failed = failed or tally.results_lost > 0 or tally.bytes_lost > 0 or tally.step_errors > 0
    payload = {
        "load_held": tally.load,
        "memory_held": tally.memory,
        "faults_survived": {k: {"tried": v[0], "survived": v[1]} for k, v in tally.faults.items()},
        "bad_inputs": tally.bad_inputs,
        "unknown_examples": tally.unknown_examples[:20],
        "hostile_accepted_examples": tally.hostile_examples[:40],
        "results_lost": tally.results_lost,
        "artifact_bytes_lost": tally.bytes_lost,
        "notes": tally.notes,
        "seconds": seconds,
        "ok": not failed,
    }
    if as_json:
        print(json.dumps(payload, indent=2))
        return 1 if failed else 0
    print("load held (health check latency during each)")
    for row in tally.load:
        extra = ""
        if "committed_mib" in row:
            held = "held" if row["quota_held"] else "EXCEEDED"
            extra = f"  committed {row['committed_mib']:.1f} of {row['quota_mib']} MiB quota ({held})"
        print(
            f"  {row['scenario']:<26} {row['held']:<34} health p50 {row['health_p50_ms']:7.1f} ms  "
            f"max {row['health_max_ms']:7.1f} ms  missed {row['health_failures']}{extra}"
        )
    if m := tally.memory:
        print("memory held")
        print(
            f"  {m['runs']} runs x 20,000 samples kept ({m['succeeded']} succeeded), --keep-runs {m['keep_runs']}: "
            f"agent RSS {m['rss_before_mib']:.0f} -> {m['rss_after_mib']:.0f} MiB, journal {m['journal_mib']:.1f} MiB "
            f"in {m['journal_lines']} lines"
        )
    print("faults survived")
    for kind, (tried, survived) in tally.faults.items():
        print(f"  {kind:<40} {survived}/{tried}")
    print(
        f"bad inputs tried {b['tried']}: refused cleanly {b['refused_cleanly']}, accepted {b['accepted']} "
        f"(of which must-refuse inputs {b['hostile_accepted']}, must be 0), "
        f"UNKNOWN/INTERNAL {b['unknown_or_internal']} (must be 0)"
    )
    for example in tally.unknown_examples[:12]:
        print(f"  UNKNOWN: {example}")
    for example in tally.hostile_examples[:12]:
        print(f"  accepted: {example}")
    print(f"results lost {tally.results_lost}, artifact bytes lost {tally.bytes_lost} (must be 0)")
    for note in tally.notes:
        print(f"note: {note}")
    print(f"{seconds:.0f} s; {'OK' if not failed else 'FAILED'}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="fewer streams, runs and fuzz examples")
    args = parser.parse_args()
    tally = Tally()
    started = time.monotonic()
    deadline = started + TIME_BUDGET_S
    steps = [
        lambda root: load_stalled(tally, root, 8 if args.quick else 24),
        lambda root: load_burst(tally, root, 20 if args.quick else 50),
        lambda root: load_quota(tally, root, 8 if args.quick else 16),
        lambda root: load_watches(tally, root, 40),
        lambda root: load_connections(tally, root, 300 if args.quick else 1100),
        lambda root: memory_held(tally, root, 20 if args.quick else 60, 10 if args.quick else 20),
        lambda root: faults(tally, root),
        lambda root: bad_inputs(tally, root, 10 if args.quick else 40),
    ]
    with tempfile.TemporaryDirectory(prefix="edge-reliability-") as tmp:
        for i, step in enumerate(steps):
            if time.monotonic() > deadline:
                tally.notes.append(f"time budget of {TIME_BUDGET_S} s spent: steps {i + 1}.. skipped")
                break
            root = Path(tmp) / f"step{i}"
            root.mkdir()
            try:
                step(root)
            except Exception as exc:  # a step that breaks is reported, the others still run
                tally.notes.append(f"step {i + 1} broke: {type(exc).__name__}: {exc}"[:300])
                tally.step_errors += 1
    return report(tally, time.monotonic() - started, args.json)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    sys.exit(main())
