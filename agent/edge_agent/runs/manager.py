"""The run queue: one benchmark at a time (by default), each in a worker subprocess, every outcome journaled.

Lifecycle of a run::

    submit ─▶ validate settings, artifact, runtime ─▶ journal "accepted" (fsync) ─▶ QUEUED(position)
          ─▶ the executor thread takes it ─▶ journal "started" ─▶ worker subprocess (new process group)
          ─▶ PROGRESS events ─▶ journal "finished" (fsync) ─▶ terminal event (RESULT or ERROR)

A re-submitted ``run_id`` never starts a second run: a finished run replays its outcome, an unfinished one is
followed. A worker that crashes becomes FAILED(WORKER_CRASHED), one that outlives its timeout is killed with
its whole process group and becomes TIMED_OUT; the agent itself is untouched.

Subscribers receive events through an :class:`EventSink` (for the asyncio server, one that hands them to the
event loop): a queued run holds no thread, only a place in ``_pending``.

When the journal cannot be written (disk full, I/O error) the manager is *degraded*: it tells the server
(health NOT_SERVING), refuses new runs with RESOURCE_EXHAUSTED, starts nothing, keeps every outcome it could
not record in memory (not streamed: an outcome is only reported once it is on disk), and retries every
``RECOVERY_SECONDS``; when the disk takes writes again it records them, reports them, and carries on.

Stopping: :meth:`RunManager.shutdown` refuses new runs (UNAVAILABLE), ends every queued run INTERRUPTED at once
(it is never started during the grace period), and lets the running one finish within the grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from edge_agent.contract.errors import (
    ArtifactNotFound,
    ArtifactRejected,
    InvalidSettings,
    QuotaExceeded,
    RuntimeUnavailable,
    ShuttingDown,
)
from edge_agent.contract.formats import EVALSET_FORMAT
from edge_agent.contract.patterns import RUN_ID_PATTERN
from edge_agent.contract.settings import BenchmarkSettings
from edge_agent.device.info import cpu_busy_seconds, device_state
from edge_agent.runs import evalsets
from edge_agent.runs.disturbance import disturbance_warnings
from edge_agent.runs.events import Event, EventSink
from edge_agent.runs.journal import Journal, JournalUnavailable, RunRecord
from edge_agent.runs.supervisor import WorkerSupervision
from edge_agent.runtimes.probe import RuntimeProbe
from edge_agent.runtimes.registry import WIRE_NAMES, for_format
from edge_agent.store.catalogue import ArtifactStore

_LOGGER = logging.getLogger(__name__)



#: How often a degraded manager checks whether the journal can be written again.
RECOVERY_SECONDS = 2.0
class RunManager(WorkerSupervision):
    def __init__(
        self,
        store: ArtifactStore,
        journal: Journal,
        *,
        max_queue: int = 16,
        memory_limit_bytes: int = 0,
        worker_command: list[str] | None = None,
        on_degraded: Callable[[bool], None] | None = None,
        private_paths: list[str] | None = None,
        runtime_probe: RuntimeProbe | None = None,
    ) -> None:
        self.store = store
        #: Kept out of the worker's reach (the store and the agent's secrets), whatever its Python path holds.
        self.private_paths = [str(store.root), *(private_paths or [])]
        self.journal = journal
        self.max_queue = max_queue
        self.memory_limit_bytes = memory_limit_bytes
        self.worker_command = worker_command or [sys.executable, "-m", "edge_agent.worker.main"]
        #: What the workers' interpreter has (not the agent's own): runs whose runtime it lacks are refused.
        self.runtime_probe = runtime_probe or RuntimeProbe(self.worker_command[0]).start()
        self.on_degraded = on_degraded
        self._lock = threading.Condition()
        self._pending: deque[str] = deque()
        self._subscribers: dict[str, list[EventSink]] = {}
        self._current: str | None = None
        self._current_proc: subprocess.Popen[bytes] | None = None
        self._accepting = True
        self._stopped = False
        #: Journal entries that could not be written yet: (run_id, fields of the "finished" entry), in order.
        self._unrecorded: list[tuple[str, dict[str, Any]]] = []
        self._recovering = threading.Lock()
        self.degraded_reason = ""
        self.interrupted_at_start: list[str] = []
        try:
            self.interrupted_at_start = journal.close_interrupted("the agent stopped during this run; it was not re-run")
        except JournalUnavailable as exc:
            for record in journal.unfinished():
                error = {"code": "INTERRUPTED", "message": "the agent stopped during this run; it was not re-run"}
                self._unrecorded.append((record.run_id, {"state": "INTERRUPTED", "error": error}))
            self.degraded_reason = str(exc)
        self._thread = threading.Thread(target=self._executor, name="edge-agent-runs", daemon=True)
        self._thread.start()
        self._recovery = threading.Thread(target=self._recover_loop, name="edge-agent-journal-recovery", daemon=True)
        self._recovery.start()

    @property
    def degraded(self) -> bool:
        return bool(self.degraded_reason)

    @property
    def accepting(self) -> bool:
        """False once the agent is stopping (new runs and pushes get UNAVAILABLE)."""
        return self._accepting

    def _set_degraded(self, reason: str) -> None:
        """Called with the lock held."""
        if not self.degraded_reason:
            _LOGGER.error("results cannot be recorded (%s): refusing new runs until the disk takes writes again", reason)
            self.degraded_reason = reason
            self._lock.notify_all()
            if self.on_degraded is not None:
                self.on_degraded(True)

    # ----- API for the service -------------------------------------------------------------------------------
    def submit(
        self,
        run_id: str,
        sha256: str,
        settings: BenchmarkSettings,
        sink: EventSink,
        *,
        eval_set: str = "",
        eval_reference: str = "",
    ) -> str:
        """Accept (or re-attach to) a run; its events go to ``sink``, ending with a terminal one. Returns the run id.

        ``eval_set`` / ``eval_reference``: sha256 of an evaluation set and the host's reference outputs on the device
        (:mod:`edge_agent.worker.evaluation`), evaluated after the timing.

        Raises:
            ArtifactRejected: a malformed run id, or an evaluation set given as the model. ArtifactNotFound: the
            artifact is not on the device. RuntimeUnavailable: its runtime is not installed. QuotaExceeded: the queue
            is full, or results cannot be recorded (disk full). ShuttingDown: the agent is stopping.
        """
        if run_id and not RUN_ID_PATTERN.fullmatch(run_id):
            raise ArtifactRejected(f"run_id must match {RUN_ID_PATTERN.pattern}")
        self.runtime_probe.wait()  # only just after start: which runtimes the workers have (never under the lock)
        with self._lock:
            if not self._accepting:
                raise ShuttingDown("the agent is shutting down; submit the run again when it is back, or to another device")
            record = self.journal.get(run_id) if run_id else None
            if record is not None:
                self._check_same_run(record, sha256, settings, eval_set=eval_set, eval_reference=eval_reference)
                self._attach(record, sink)
                return record.run_id
            if self.degraded:
                raise QuotaExceeded(
                    "the device's disk is too full to record results, so no run is accepted; free space on the device "
                    f"({self.degraded_reason})"
                )
            meta = self.store.get(sha256)
            if meta is None:
                raise ArtifactNotFound(f"artifact {sha256} is not on this device; push it first")
            if meta.format == EVALSET_FORMAT:
                raise ArtifactRejected(f"{sha256} is an evaluation set, not a model; benchmark a model with it")
            runtime = self._runtime_for(meta.format, settings.runtime)
            optimizing = settings.graph_optimization not in ("GRAPH_OPT_UNSPECIFIED", "GRAPH_OPT_ALL")
            if optimizing and not for_format(meta.format).graph_optimization:
                raise InvalidSettings(
                    f"graph_optimization applies to ONNX Runtime only; a {runtime} run has no such setting: leave it unset"
                )
            # Device-side evaluation (edge_agent.worker.evaluation): journaled with the settings, run after the timing.
            evaluation_sets = {
                "eval_set_sha256": evalsets.resolve(self.store, eval_set, "eval_set_sha256"),
                "eval_reference_sha256": evalsets.resolve(self.store, eval_reference, "eval_reference_sha256"),
            }
            if len(self._pending) >= self.max_queue:
                raise QuotaExceeded(f"the run queue is full ({self.max_queue} waiting); retry later")
            run_id = run_id or uuid.uuid4().hex
            recorded = {**settings.to_dict(), "runtime": runtime, **evaluation_sets}
            try:
                self.journal.append(run_id, "accepted", sha256=sha256, settings=recorded)
            except JournalUnavailable as exc:
                self._set_degraded(str(exc))
                raise QuotaExceeded(
                    f"the device's disk is too full to record the run; free space on the device ({exc})"
                ) from None
            self._pending.append(run_id)
            self._subscribers.setdefault(run_id, []).append(sink)
            position = len(self._pending) - 1 + (1 if self._current else 0)
            sink.put(Event(run_id, "QUEUED", "queued", position))
            self._lock.notify_all()
        return run_id

    @staticmethod
    def _check_same_run(
        record: RunRecord, sha256: str, settings: BenchmarkSettings, *, eval_set: str = "", eval_reference: str = ""
    ) -> None:
        """A run id names one run: re-sending it must mean the same artifact, settings and evaluation sets."""
        if record.sha256 != sha256:
            raise ArtifactRejected(
                f"run_id {record.run_id!r} already names a run of artifact {record.sha256[:16]}…; use another run_id"
            )
        asked = {k: v for k, v in settings.to_dict().items() if k != "runtime"}
        if any(record.settings.get(k) != v for k, v in asked.items()):
            raise ArtifactRejected(f"run_id {record.run_id!r} already names a run with other settings; use another run_id")
        # Journaled with the settings at acceptance ("" for none; absent in records older than evaluation sets).
        evaluation_sets = {"eval_set_sha256": eval_set, "eval_reference_sha256": eval_reference}
        if any((record.settings.get(k) or "") != (v or "") for k, v in evaluation_sets.items()):
            raise ArtifactRejected(
                f"run_id {record.run_id!r} already names a run with other evaluation sets; use another run_id"
            )

    def _runtime_for(self, fmt: str, requested: str) -> str:
        plugin = for_format(fmt)  # ArtifactRejected for a format no runtime here runs
        runtime = WIRE_NAMES.get(requested, plugin.name)
        if runtime != plugin.name:
            raise ArtifactRejected(f"an artifact of format {fmt} runs with {plugin.name}, not {runtime}")
        # Asked of the workers' interpreter; when it could not answer, the run goes ahead and its worker says why.
        if self.runtime_probe.installed(plugin.device_name) is False:
            raise RuntimeUnavailable(plugin.missing(self.worker_command[0]))
        return runtime

    def _attach(self, record: RunRecord, sink: EventSink) -> None:
        if record.terminal:
            sink.put(self._terminal_event(record))
            return
        self._subscribers.setdefault(record.run_id, []).append(sink)
        if record.state == "QUEUED" and record.run_id in self._pending:
            position = list(self._pending).index(record.run_id) + (1 if self._current else 0)
            sink.put(Event(record.run_id, "QUEUED", "queued", position))
        else:
            sink.put(Event(record.run_id, "RUNNING", "phase", "running"))

    def unsubscribe(self, run_id: str, sink: EventSink) -> None:
        with self._lock:
            subs = self._subscribers.get(run_id, [])
            with contextlib.suppress(ValueError):
                subs.remove(sink)

    @staticmethod
    def _terminal_event(record: RunRecord) -> Event:
        if record.state == "SUCCEEDED":
            return Event(record.run_id, record.state, "result", record.result)
        return Event(record.run_id, record.state, "error", record.error)

    def _publish(self, event: Event) -> None:
        with self._lock:
            for sink in list(self._subscribers.get(event.run_id, [])):
                sink.put(event)
            if event.kind in ("result", "error"):
                self._subscribers.pop(event.run_id, None)

    # ----- executor ------------------------------------------------------------------------------------------
    def _executor(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and (not self._pending or not self._accepting or self.degraded):
                    self._lock.wait()
                if self._stopped:
                    return
                run_id = self._pending.popleft()
                self._current = run_id
                for position, waiting in enumerate(self._pending, start=1):
                    for sink in self._subscribers.get(waiting, []):
                        sink.put(Event(waiting, "QUEUED", "queued", position))
            try:
                self._execute(run_id)
            except JournalUnavailable as exc:  # "started" could not be recorded: run it when the disk recovers
                with self._lock:
                    self._pending.appendleft(run_id)
                    self._set_degraded(str(exc))
            except Exception:  # never let one run take the executor down
                _LOGGER.exception("run %s failed unexpectedly", run_id)
                self._finish(run_id, "FAILED", error={"code": "AGENT_ERROR", "message": "internal error; see the agent log"})
            finally:
                with self._lock:
                    self._current = None
                    self._current_proc = None
                    self._lock.notify_all()

    def _finish(
        self, run_id: str, state: str, *, result: dict[str, Any] | None = None, error: dict[str, str] | None = None
    ) -> None:
        """Record a run's outcome, then report it; if it cannot be recorded, keep it until it can."""
        record = self.journal.get(run_id)
        if record is None or record.terminal:
            return
        fields = {"state": state, "result": result, "error": error}
        with self._lock:
            if self._unrecorded or self.degraded:
                self._unrecorded.append((run_id, fields))
                return
        try:
            self.journal.append(run_id, "finished", **fields)
        except JournalUnavailable as exc:
            with self._lock:
                self._unrecorded.append((run_id, fields))
                self._set_degraded(str(exc))
            return
        self._publish(self._terminal_event(self.journal.get(run_id)))  # type: ignore[arg-type]

    def _recover_loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._stopped or self.degraded)
                if self._stopped and not self._unrecorded:
                    return
            time.sleep(RECOVERY_SECONDS)
            self.try_recover()
            with self._lock:
                if self._stopped and not self.degraded:
                    return

    def try_recover(self) -> bool:
        """Write what could not be recorded; leave the degraded state when the journal takes writes again.

        Serialised (one recovery at a time), and the degraded state ends in the same critical section that sees
        nothing left to record, so an outcome parked meanwhile by :meth:`_finish` is never stranded.
        """
        with self._recovering:
            with self._lock:
                if not self.degraded:
                    return True
            if not self.journal.writable():
                return False
            while True:
                with self._lock:
                    if not self._unrecorded:
                        self.degraded_reason = ""
                        self._lock.notify_all()
                        break
                    run_id, fields = self._unrecorded[0]
                try:
                    record = self.journal.get(run_id)
                    if record is not None and not record.terminal:
                        self.journal.append(run_id, "finished", **fields)
                except JournalUnavailable:
                    return False
                with self._lock:
                    self._unrecorded.pop(0)
                record = self.journal.get(run_id)
                if record is not None:
                    self._publish(self._terminal_event(record))
        _LOGGER.warning("the results journal takes writes again: accepting runs")
        if self.on_degraded is not None:
            self.on_degraded(False)
        return True

    def _execute(self, run_id: str) -> None:
        record = self.journal.get(run_id)
        if record is None:  # accepted runs are always in the journal
            raise RuntimeError(f"run {run_id} is queued but not in the journal")
        self.journal.append(run_id, "started")
        self._publish(Event(run_id, "RUNNING", "phase", "started"))
        try:
            model_path = self.store.model_path(record.sha256)
            manifest = self.store.manifest(record.sha256)
        except (ArtifactNotFound, OSError, ValueError):
            missing = {"code": "ARTIFACT_MISSING", "message": "the artifact was deleted before the run; push it again and re-run"}
            self._finish(run_id, "FAILED", error=missing)
            return
        request = {
            "model_path": str(model_path),
            "runtime": record.settings["runtime"],
            "settings": record.settings,
            "input": manifest.get("input", {"shape": ["batch"], "dtype": "float32"}),
            "torch_engine": (manifest.get("target") or {}).get("torch_engine") if manifest.get("precision") == "int8" else None,
            "memory_limit_bytes": self.memory_limit_bytes,
            "eval_paths": evalsets.worker_paths(self.store, record.settings),
            "private_paths": self.private_paths,
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
        warnings = disturbance_warnings(state_before, state_after, other_load)
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

    # ----- shutdown ------------------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Refuse new runs (UNAVAILABLE) and end every queued run INTERRUPTED: none starts from now on."""
        with self._lock:
            self._accepting = False
            pending = list(self._pending)
            self._pending.clear()
            self._lock.notify_all()
        for run_id in pending:
            self._finish(
                run_id, "INTERRUPTED", error={"code": "INTERRUPTED", "message": "the agent shut down before the run started"}
            )

    def shutdown(self, grace: float) -> None:
        """Stop accepting, let the current run finish within ``grace`` seconds, then kill it; journal everything."""
        self.stop_accepting()
        end = time.monotonic() + grace
        with self._lock:
            self._lock.wait_for(lambda: self._current is None, timeout=max(0.0, grace))
            self._stopped = True
            proc = self._current_proc
            self._lock.notify_all()
        if proc is not None:  # only the executor reaps the worker; here it is only killed
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._thread.join(timeout=max(10.0, end - time.monotonic()))
        # One last attempt to record what the disk refused; what still cannot be written is INTERRUPTED at next start.
        self.try_recover()
