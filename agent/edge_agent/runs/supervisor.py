"""Supervision of the benchmark worker subprocess: started in its own process group with a scrubbed environment
and a scratch folder, fed its request, followed on its protocol pipe (progress events are published) and its
stderr tail, killed with its whole group at the run's timeout, and its end turned into an outcome (a result,
TIMED_OUT, WORKER_CRASHED, OOM with the memory limit named, RUNTIME_ERROR with the last line it wrote)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

from edge_agent.contract.errors import OUT_OF_MEMORY_MARKERS
from edge_agent.runs.events import Event
from edge_agent.runtimes.probe import worker_environment

#: The longest protocol line a worker may send (a result with a million latency samples is about 20 MB).
MAX_WORKER_MESSAGE_BYTES = 64 << 20


class WorkerSupervision:
    """The run manager's worker handling (:class:`edge_agent.runs.manager.RunManager` sets these attributes)."""

    worker_command: list[str]
    memory_limit_bytes: int
    _lock: threading.Condition
    _current_proc: subprocess.Popen[bytes] | None
    _stopped: bool

    def _publish(self, event: Event) -> None:
        raise NotImplementedError

    def _run_worker(self, run_id: str, request: dict[str, Any], timeout: float) -> tuple[dict[str, Any], float]:
        """Run the worker; returns its outcome and the CPU seconds it used."""
        with tempfile.TemporaryDirectory(prefix="edge-agent-run-") as tmp:
            channel_read, channel_write = os.pipe()
            env = worker_environment(tmp, request["settings"]["threads"])
            env.update({"EDGE_AGENT_RESULT_FD": str(channel_write), "EDGE_AGENT_PARENT_PID": str(os.getpid())})
            try:
                proc = subprocess.Popen(
                    self.worker_command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    cwd=tmp,
                    env=env,
                    pass_fds=(channel_write,),
                    start_new_session=True,  # its own process group: a timeout kills everything it started
                )
            finally:
                os.close(channel_write)
            with self._lock:
                self._current_proc = proc
            outcome, stderr_tail, timed_out = self._follow_worker(run_id, proc, channel_read, request, timeout)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
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
        if outcome is None or proc.returncode != 0:
            tail = stderr_tail.decode(errors="replace").strip()
            last = tail.splitlines()
            detail = last[-1][:300] if last else f"exit code {proc.returncode}"
            # Looked for in the whole tail: runtimes name the failed allocation after a long preamble.
            code = "OOM" if any(marker in tail for marker in OUT_OF_MEMORY_MARKERS) else "RUNTIME_ERROR"
            if code == "OOM":
                limit = "no limit set"
                if self.memory_limit_bytes:
                    limit = f"its limit, --memory-limit-mb {self.memory_limit_bytes >> 20}"
                detail = f"it ran out of memory ({limit}): {detail}"
            return {"code": code, "message": f"the benchmark worker failed: {detail}"}, child_cpu
        return outcome, child_cpu

    def _follow_worker(
        self, run_id: str, proc: subprocess.Popen[bytes], channel: int, request: dict[str, Any], timeout: float
    ) -> tuple[dict[str, Any] | None, bytes, bool]:
        """Feed the request, read the protocol channel and the stderr tail until the worker ends or times out."""
        assert proc.stdin is not None and proc.stderr is not None  # both are pipes (see Popen above)
        try:
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the worker died at once; its exit status says why
        outcome: dict[str, Any] | None = None
        stderr_tail = b""
        pending = bytearray()
        deadline = time.monotonic() + timeout
        timed_out = False
        with selectors.DefaultSelector() as selector:
            selector.register(channel, selectors.EVENT_READ, "channel")
            selector.register(proc.stderr, selectors.EVENT_READ, "err")
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(timeout=min(remaining, 1.0)):
                    fd = key.fd
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    if key.data == "err":
                        stderr_tail = (stderr_tail + chunk)[-4096:]
                        continue
                    pending += chunk
                    start = 0
                    while (newline := pending.find(b"\n", start)) >= 0:
                        outcome = self._on_worker_line(run_id, bytes(pending[start:newline])) or outcome
                        start = newline + 1
                    del pending[:start]
                    if len(pending) > MAX_WORKER_MESSAGE_BYTES:
                        pending.clear()  # a line this long is not a protocol message
        os.close(channel)
        proc.stderr.close()
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return outcome, stderr_tail, timed_out

    def _on_worker_line(self, run_id: str, line: bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(message, dict):
            return None
        if message.get("type") == "progress":
            done, total, phase = message.get("done"), message.get("total"), message.get("phase")
            if isinstance(done, int) and isinstance(total, int) and isinstance(phase, str):
                self._publish(Event(run_id, "RUNNING", "progress", {"done": done, "total": total, "phase": phase[:40]}))
            return None
        if message.get("type") in ("result", "error"):
            return message
        return None
