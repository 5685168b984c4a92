"""The run queue: one benchmark at a time (by default), each in a worker subprocess, every outcome journaled.

Lifecycle of a run::

    submit ─▶ validate settings, artifact, runtime ─▶ journal "accepted" (fsync) ─▶ QUEUED(position)
          ─▶ the executor thread takes it ─▶ journal "started" ─▶ worker subprocess (new process group)
          ─▶ PROGRESS events ─▶ journal "finished" (fsync) ─▶ terminal event (RESULT or ERROR)

A re-submitted ``run_id`` never starts a second run: a finished run replays its outcome, an unfinished one is
followed. A worker that crashes becomes FAILED(WORKER_CRASHED), one that outlives its timeout is killed with
its whole process group and becomes TIMED_OUT; the agent itself is untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from edge_agent import evaluation
from edge_agent.device import cpu_busy_seconds, device_state, torch_available
from edge_agent.errors import ArtifactNotFound, ArtifactRejected, InvalidSettings, QuotaExceeded, RuntimeUnavailable
from edge_agent.journal import Journal, RunRecord
from edge_agent.store import NAME_PATTERN, ArtifactStore

_LOGGER = logging.getLogger(__name__)

#: (default, minimum, maximum) of every numeric benchmark setting; 0 in a request means the default.
BOUNDS: dict[str, tuple[float, float, float]] = {
    "batch_size": (1, 1, 1024),
    "threads": (1, 1, 256),
    "warmup_runs": (10, 0, 100_000),
    "warmup_min_seconds": (0.5, 0.0, 600.0),
    "iterations": (100, 1, 1_000_000),
    "min_seconds": (1.0, 0.0, 3600.0),
    "timeout_seconds": (600.0, 1.0, 86_400.0),
}
#: Other processes using more CPU than this (in cores, averaged over the run) mark the run as disturbed.
DISTURBED_OTHER_LOAD = 0.5
DISTURBED_TEMPERATURE_C = 80.0


def resolve_settings(raw: dict[str, Any], cpu_count: int) -> dict[str, Any]:
    """Fill defaults and check bounds; raises InvalidSettings naming the field and its bounds."""
    settings: dict[str, Any] = {}
    for key, (default, low, high) in BOUNDS.items():
        value = raw.get(key, 0)
        if key == "warmup_runs" and value == -1:
            value = 0
        elif not value:
            value = default
        if key == "threads":
            high = min(high, cpu_count)
        if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
            raise InvalidSettings(f"{key}={value} is out of bounds: allowed {low}..{high}")
        settings[key] = type(default)(value)
    settings["runtime"] = raw.get("runtime", "RUNTIME_UNSPECIFIED")
    settings["graph_optimization"] = raw.get("graph_optimization", "GRAPH_OPT_UNSPECIFIED")
    settings["keep_samples"] = bool(raw.get("keep_samples", False))
    return settings


@dataclass
class Event:
    run_id: str
    state: str
    kind: str  # queued | phase | progress | result | error
    payload: Any


class RunManager:
    def __init__(
        self,
        store: ArtifactStore,
        journal: Journal,
        *,
        max_queue: int = 16,
        memory_limit_bytes: int = 0,
        worker_command: list[str] | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.max_queue = max_queue
        self.memory_limit_bytes = memory_limit_bytes
        self.worker_command = worker_command or [sys.executable, "-m", "edge_agent.worker"]
        self._lock = threading.Condition()
        self._pending: deque[str] = deque()
        self._subscribers: dict[str, list[queue.Queue[Event]]] = {}
        self._current: str | None = None
        self._current_proc: subprocess.Popen[bytes] | None = None
        self._accepting = True
        self._stopped = False
        self.interrupted_at_start = journal.close_interrupted("the agent stopped during this run; it was not re-run")
        self._thread = threading.Thread(target=self._executor, name="edge-agent-runs", daemon=True)
        self._thread.start()

    # ----- API for the service -------------------------------------------------------------------------------
    def submit(
        self, run_id: str, sha256: str, raw_settings: dict[str, Any], *, eval_set: str = "", eval_reference: str = ""
    ) -> queue.Queue[Event]:
        """Accept (or re-attach to) a run; returns a queue of its events, ending with a terminal one."""
        if run_id and not NAME_PATTERN.fullmatch(run_id):
            raise ArtifactRejected(f"run_id must match {NAME_PATTERN.pattern}")
        events: queue.Queue[Event] = queue.Queue()
        with self._lock:
            if not self._accepting:
                raise QuotaExceeded("the agent is shutting down; submit the run again when it is back")
            record = self.journal.get(run_id) if run_id else None
            if record is not None:
                self._attach(record, events)
                return events
            settings = resolve_settings(raw_settings, os.cpu_count() or 1)
            meta = self.store.get(sha256)
            if meta is None:
                raise ArtifactNotFound(f"artifact {sha256} is not on this device; push it first")
            if meta.format == evaluation.FORMAT:
                raise ArtifactRejected(f"{sha256} is an evaluation set, not a model; benchmark a model with it")
            runtime = self._runtime_for(meta.format, settings["runtime"])
            settings["runtime"] = runtime
            # Device-side evaluation (edge_agent.evaluation): journaled with the settings, run after the timing.
            settings["eval_set_sha256"] = evaluation.resolve(self.store, eval_set, "eval_set_sha256")
            settings["eval_reference_sha256"] = evaluation.resolve(self.store, eval_reference, "eval_reference_sha256")
            if len(self._pending) >= self.max_queue:
                raise QuotaExceeded(f"the run queue is full ({self.max_queue} waiting); retry later")
            run_id = run_id or uuid.uuid4().hex
            self.journal.append(run_id, "accepted", sha256=sha256, settings=settings)
            self._pending.append(run_id)
            self._subscribers.setdefault(run_id, []).append(events)
            position = len(self._pending) - 1 + (1 if self._current else 0)
            events.put(Event(run_id, "QUEUED", "queued", position))
            self._lock.notify_all()
        return events

    def _runtime_for(self, fmt: str, requested: str) -> str:
        runtime = {"RUNTIME_ONNXRUNTIME": "onnxruntime", "RUNTIME_TORCHSCRIPT": "torchscript"}.get(
            requested, "onnxruntime" if fmt == "onnx" else "torchscript"
        )
        expected = "onnxruntime" if fmt == "onnx" else "torchscript"
        if runtime != expected:
            raise ArtifactRejected(f"a {fmt} artifact runs with {expected}, not {runtime}")
        if runtime == "torchscript" and not torch_available():
            raise RuntimeUnavailable("TorchScript needs torch, which this device does not have; push the ONNX artifact")
        return runtime

    def _attach(self, record: RunRecord, events: queue.Queue[Event]) -> None:
        if record.terminal:
            events.put(self._terminal_event(record))
            return
        self._subscribers.setdefault(record.run_id, []).append(events)
        if record.state == "QUEUED":
            position = list(self._pending).index(record.run_id) + (1 if self._current else 0)
            events.put(Event(record.run_id, "QUEUED", "queued", position))
        else:
            events.put(Event(record.run_id, "RUNNING", "phase", "running"))

    def unsubscribe(self, run_id: str, events: queue.Queue[Event]) -> None:
        with self._lock:
            subs = self._subscribers.get(run_id, [])
            with contextlib.suppress(ValueError):
                subs.remove(events)

    @staticmethod
    def _terminal_event(record: RunRecord) -> Event:
        if record.state == "SUCCEEDED":
            return Event(record.run_id, record.state, "result", record.result)
        return Event(record.run_id, record.state, "error", record.error)

    def _publish(self, event: Event) -> None:
        with self._lock:
            for events in list(self._subscribers.get(event.run_id, [])):
                events.put(event)
            if event.kind in ("result", "error"):
                self._subscribers.pop(event.run_id, None)

    # ----- executor ------------------------------------------------------------------------------------------
    def _executor(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopped:
                    self._lock.wait()
                if self._stopped:
                    return
                run_id = self._pending.popleft()
                self._current = run_id
                for position, waiting in enumerate(self._pending, start=1):
                    for events in self._subscribers.get(waiting, []):
                        events.put(Event(waiting, "QUEUED", "queued", position))
            try:
                self._execute(run_id)
            except Exception:  # never let one run take the executor down
                _LOGGER.exception("run %s failed unexpectedly", run_id)
                self._finish(run_id, "FAILED", error={"code": "AGENT_ERROR", "message": "internal error; see the agent log"})
            finally:
                with self._lock:
                    self._current = None
                    self._current_proc = None

    def _finish(
        self, run_id: str, state: str, *, result: dict[str, Any] | None = None, error: dict[str, str] | None = None
    ) -> None:
        record = self.journal.get(run_id)
        if record is None or record.terminal:
            return
        self.journal.append(run_id, "finished", state=state, result=result, error=error)
        self._publish(self._terminal_event(self.journal.get(run_id)))  # type: ignore[arg-type]

    def _execute(self, run_id: str) -> None:
        record = self.journal.get(run_id)
        assert record is not None  # accepted runs are always in the journal
        self.journal.append(run_id, "started")
        self._publish(Event(run_id, "RUNNING", "phase", "started"))
        try:
            model_path = self.store.model_path(record.sha256)
            manifest = self.store.manifest(record.sha256)
        except (ArtifactNotFound, OSError, ValueError):
            self._finish(run_id, "FAILED", error={"code": "MODEL_INVALID", "message": "the artifact was deleted before the run"})
            return
        request = {
            "model_path": str(model_path),
            "runtime": record.settings["runtime"],
            "settings": record.settings,
            "input": manifest.get("input", {"shape": ["batch"], "dtype": "float32"}),
            "torch_engine": (manifest.get("target") or {}).get("torch_engine") if manifest.get("precision") == "int8" else None,
            "memory_limit_bytes": self.memory_limit_bytes,
            "eval_paths": evaluation.worker_paths(self.store, record.settings),
        }
        state_before = device_state().to_dict()
        busy_before = cpu_busy_seconds()
        started = time.monotonic()
        outcome, child_cpu = self._run_worker(run_id, request, record.settings["timeout_seconds"])
        wall = time.monotonic() - started
        other_load = max(0.0, (cpu_busy_seconds() - busy_before - child_cpu) / wall) if wall > 0 else 0.0
        state_after = device_state().to_dict()
        if outcome.get("type") != "result":
            self._finish(run_id, outcome.get("state", "FAILED"), error={"code": outcome["code"], "message": outcome["message"]})
            return
        warnings = []
        if other_load > DISTURBED_OTHER_LOAD:
            warnings.append(f"other processes used {other_load:.2f} CPU cores on average during the run")
        for label, state in (("before", state_before), ("after", state_after)):
            if state["throttled"]:
                warnings.append(f"the CPU was throttled {label} the run (flags {state['throttled_raw']})")
            if state["temperature_c"] >= DISTURBED_TEMPERATURE_C:
                warnings.append(f"CPU temperature {state['temperature_c']:.0f} °C {label} the run")
        freq_before, freq_after = state_before["cpu_freq_mhz"], state_after["cpu_freq_mhz"]
        if not (math.isnan(freq_before) or math.isnan(freq_after)) and freq_after < 0.8 * freq_before:
            warnings.append("the CPU frequency dropped by more than 20% during the run")
        outcome.pop("type")
        result = {
            **outcome,
            "state_before": state_before,
            "state_after": state_after,
            "other_cpu_load": other_load,
            "disturbed": bool(warnings),
            "warnings": warnings,
            "settings": record.settings,
            "wall_seconds": wall,
        }
        self._finish(run_id, "SUCCEEDED", result=result)

    def _run_worker(self, run_id: str, request: dict[str, Any], timeout: float) -> tuple[dict[str, Any], float]:
        """Run the worker; returns its outcome and the CPU seconds it used."""
        with tempfile.TemporaryDirectory(prefix="edge-agent-run-") as tmp:
            env = {**os.environ, "TMPDIR": tmp, "OMP_NUM_THREADS": str(request["settings"]["threads"])}
            proc = subprocess.Popen(
                self.worker_command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tmp,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills everything it started
            )
            with self._lock:
                self._current_proc = proc
            assert proc.stdin and proc.stdout and proc.stderr
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
            outcome: dict[str, Any] | None = None
            stderr_tail = b""
            deadline = time.monotonic() + timeout
            selector = selectors.DefaultSelector()
            selector.register(proc.stdout, selectors.EVENT_READ, "out")
            selector.register(proc.stderr, selectors.EVENT_READ, "err")
            buffer = b""
            timed_out = False
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(timeout=min(remaining, 1.0)):
                    chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    if key.data == "err":
                        stderr_tail = (stderr_tail + chunk)[-4096:]
                        continue
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        outcome = self._on_worker_line(run_id, line) or outcome
            selector.close()
            if timed_out:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            for stream in (proc.stdout, proc.stderr):
                stream.close()
            child_cpu = usage.ru_utime + usage.ru_stime
        if timed_out:
            return {
                "state": "TIMED_OUT",
                "code": "TIMED_OUT",
                "message": f"the run exceeded its {timeout:g} s timeout and was killed",
            }, child_cpu
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            if self._stopped:
                return {"state": "INTERRUPTED", "code": "INTERRUPTED", "message": "the agent shut down during the run"}, child_cpu
            return {"code": "WORKER_CRASHED", "message": f"the benchmark worker died with {name}"}, child_cpu
        if outcome is None:
            last = stderr_tail.decode(errors="replace").strip().splitlines()
            detail = last[-1][:300] if last else f"exit code {proc.returncode}"
            out_of_memory = ("MemoryError", "bad_alloc", "failed to map segment", "Cannot allocate memory")
            code = "OOM" if any(marker in detail for marker in out_of_memory) else "RUNTIME_ERROR"
            return {"code": code, "message": f"the benchmark worker failed: {detail}"}, child_cpu
        return outcome, child_cpu

    def _on_worker_line(self, run_id: str, line: bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(line)
        except ValueError:
            return None
        if message.get("type") == "progress":
            self._publish(Event(run_id, "RUNNING", "progress", message))
            return None
        if message.get("type") in ("result", "error"):
            return message
        return None

    # ----- shutdown ------------------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        with self._lock:
            self._accepting = False

    def shutdown(self, grace: float) -> None:
        """Let the current run finish within ``grace`` seconds, then kill it; journal every unfinished run."""
        self.stop_accepting()
        end = time.monotonic() + grace
        while time.monotonic() < end:
            with self._lock:
                if self._current is None:
                    break
            time.sleep(0.05)
        with self._lock:
            self._stopped = True
            proc = self._current_proc
            pending = list(self._pending)
            self._pending.clear()
            self._lock.notify_all()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._thread.join(timeout=10)
        for run_id in pending:
            self._finish(
                run_id, "INTERRUPTED", error={"code": "INTERRUPTED", "message": "the agent shut down before the run started"}
            )
