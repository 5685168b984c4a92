"""The benchmark worker: the only code that loads an (untrusted) model. Runs as a subprocess per run.

Runtimes come from :mod:`edge_agent.runtimes.registry` (the request names one): each prepares the model before
confinement and opens it after.

    python -m edge_agent.worker < request.json

Protocol: one JSON request on stdin; JSON lines on the pipe named by ``EDGE_AGENT_RESULT_FD`` (not stdout: a
model can print, and stdout is redirected to stderr): ``{"type": "progress", "phase", "done", "total"}`` while it
works, then exactly one ``{"type": "result", ...}`` or ``{"type": "error", "code", "message"}``; the parent
accepts a result only from a worker that exits 0.
The parent (:mod:`edge_agent.runs.manager`) owns the timeout, the process group and the accounting; a crash or a hang
here kills only this process.

Defence in depth against a hostile model (the store's content check, e.g. :mod:`edge_agent.runtimes.onnx_guard`,
already refused it once): the parent starts this process in an empty scratch directory with a scrubbed
environment; the model file is read into memory and checked again, then :func:`edge_agent.worker.confine.confine`
takes the filesystem away (Landlock, where the kernel has it), and only then does the runtime load the model, from
bytes, so there is no model directory for external data to resolve against.

Peak RSS is the kernel's ``ru_maxrss`` of this process: no polling thread runs beside the timing loop, so the
memory figure cannot disturb the latency figures.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from edge_agent.contract.errors import OUT_OF_MEMORY_MARKERS
from edge_agent.contract.latency import latency_record
from edge_agent.runtimes.base import WorkerError
from edge_agent.runtimes.registry import BY_NAME
from edge_agent.worker.confine import Confinement, confine
from edge_agent.worker.evaluation import evaluate as evaluate_on_sets
from edge_agent.worker.timing import measure

#: Inputs larger than this are refused before allocation (a model can declare absurd dimensions).
MAX_INPUT_ELEMENTS = 1 << 28
#: Latency samples a result keeps with ``keep_samples`` (evenly spaced when more calls were timed).
MAX_KEPT_SAMPLES = 20_000


#: The protocol channel: a pipe the parent passes (EDGE_AGENT_RESULT_FD), never stdout, which a model can print to.
_CHANNEL: int = -1


def emit(payload: dict[str, Any]) -> None:
    data = (json.dumps(payload) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(_CHANNEL, view) :]


def _die_with_parent() -> None:
    """If the agent dies (even by SIGKILL), the kernel kills this worker too: no orphan keeps benchmarking."""
    import ctypes

    parent = int(os.environ.get("EDGE_AGENT_PARENT_PID", "0"))
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent and os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)


def kept_samples(samples: list[float]) -> list[float]:
    """At most ``MAX_KEPT_SAMPLES`` latency samples, evenly spaced in measurement order when more were measured
    (the journal keeps every result in memory and on disk; ``count`` still says how many calls were timed)."""
    if len(samples) <= MAX_KEPT_SAMPLES:
        return samples
    step = len(samples) / MAX_KEPT_SAMPLES
    return [samples[int(i * step)] for i in range(MAX_KEPT_SAMPLES)]


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _input_shape(declared: list[Any], batch: int) -> list[int]:
    dims = [batch] + [d for d in declared[1:]]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise WorkerError("MODEL_INVALID", f"input shape {declared} has non-positive or symbolic non-batch dimensions")
    elements = 1
    for d in dims:
        elements *= d
    if elements > MAX_INPUT_ELEMENTS:
        raise WorkerError("MODEL_INVALID", f"input of {elements} elements exceeds the cap of {MAX_INPUT_ELEMENTS}")
    return dims


def _read_model(path: str) -> bytes:
    with open(path, "rb") as fh:  # noqa: PTH123 - the worker keeps imports minimal
        return fh.read()


def load_confined(
    runtime: str, model_path: str, readable: list[str] | None = None, private: list[str] | None = None
) -> tuple[bytes, Confinement]:
    """Read the model, let its runtime import itself and re-check the bytes (:meth:`Runtime.prepare`), then
    confine this process; returns the model bytes."""
    plugin = BY_NAME.get(runtime)
    if plugin is None:  # a runtime the registry lacks: fail loudly, never run it with another runtime
        raise WorkerError("RUNTIME_ERROR", f"this worker has no runner for runtime {runtime!r}")
    model = _read_model(model_path)
    plugin.prepare(model)
    # ``readable``: the run's evaluation-set files, read after the timed loop (read-only, those files alone);
    # ``private``: the agent's store and secrets, unreadable even where the Python path holds them.
    return model, confine(os.getcwd(), extra_read=readable, private=private)  # noqa: PTH109 - a string path, as Landlock takes it


def run(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    settings = request["settings"]
    runtime = request["runtime"]
    baseline_rss = _rss_bytes()
    emit({"type": "progress", "phase": "loading", "done": 0, "total": 0})
    t0 = time.perf_counter()
    model, confinement = load_confined(
        runtime, request["model_path"], list((request.get("eval_paths") or {}).values()), request.get("private_paths")
    )
    opened = BY_NAME[runtime].open(model, request)  # load_confined refused any runtime the registry lacks
    call, declared, dtype, version = opened.call, opened.declared, opened.dtype, opened.version
    evaluate_call = opened.evaluate
    load_seconds = time.perf_counter() - t0
    evaluate_call = evaluate_call or call
    del model  # the runtime holds its own copy
    if _fault_active("worker_slow"):  # a device slowed on purpose: 2 ms of busy-wait per call
        model_call = call

        def call(x: Any) -> Any:
            end = time.perf_counter() + 0.002
            while time.perf_counter() < end:
                pass
            return model_call(x)

    dims = _input_shape(declared, settings["batch_size"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(dims).astype(dtype)
    t0 = time.perf_counter()
    _first_call(call, x, dims)
    first_ms = (time.perf_counter() - t0) * 1000
    fixed = np.random.default_rng(1234).standard_normal([1, *dims[1:]]).astype(dtype)
    output_sample = np.asarray(call(fixed), dtype=np.float64).ravel()[:1000].tolist()

    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 0.25:
            last[0] = now
            emit({"type": "progress", "phase": "measuring", "done": done, "total": max(total, done)})

    emit({"type": "progress", "phase": "warmup", "done": 0, "total": settings["warmup_runs"]})
    stats = measure(
        lambda: call(x),
        warmup_runs=settings["warmup_runs"],
        warmup_min_seconds=settings["warmup_min_seconds"],
        iterations=settings["iterations"],
        min_seconds=settings["min_seconds"],
        on_progress=progress,
    )
    peak_rss = _rss_bytes()  # before the evaluation below: the memory figure is the benchmark's
    evaluation = None
    if request.get("eval_paths"):  # after the timed loop, same session: it cannot disturb the timing
        emit({"type": "progress", "phase": "evaluating", "done": 0, "total": 0})
        evaluation = evaluate_on_sets(evaluate_call, request["eval_paths"], dtype, dims[1:])
    kept = kept_samples(stats.samples_ms) if settings.get("keep_samples") else []
    latency = latency_record(stats, settings["batch_size"], kept)
    result = {
        "latency": latency,
        "load_seconds": load_seconds,
        "first_inference_ms": first_ms,
        "peak_rss_bytes": peak_rss,
        "baseline_rss_bytes": baseline_rss,
        "runtime": runtime,
        "runtime_version": version,
        "output_sample": output_sample,
        "confinement": confinement.describe(),
    }
    if evaluation is not None:
        result["evaluation"] = evaluation
    return result


def _first_call(call: Callable[[Any], Any], x: Any, dims: list[int]) -> None:
    """The first inference, whose failure names the model and its input in one line (a runtime's own message spans
    several, and the last alone says little)."""
    try:
        call(x)
    except MemoryError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())
        if any(marker in text for marker in OUT_OF_MEMORY_MARKERS):
            raise  # the memory limit, not the model: the agent names it with the limit
        shown = text[:400] or type(exc).__name__
        raise WorkerError("MODEL_INVALID", f"the model fails on an input of shape {dims} ({x.dtype}): {shown}") from None


def _fault_active(name: str) -> bool:
    """Test-only failure modes (EDGE_AGENT_FAULT), inert unless EDGE_AGENT_ENABLE_FAULTS=1."""
    return os.environ.get("EDGE_AGENT_ENABLE_FAULTS") == "1" and os.environ.get("EDGE_AGENT_FAULT") == name


def _test_fault() -> None:
    if _fault_active("worker_abort"):
        os.abort()
    if _fault_active("worker_hang"):
        time.sleep(3600)


def main() -> int:
    global _CHANNEL
    _CHANNEL = int(os.environ["EDGE_AGENT_RESULT_FD"])
    os.dup2(2, 1)  # whatever the model prints goes to stderr (a bounded tail is kept), never into the protocol
    _die_with_parent()
    request = json.loads(sys.stdin.read())
    limit = request.get("memory_limit_bytes") or 0
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _test_fault()
    try:
        emit({"type": "result", **run(request)})
    except WorkerError as exc:
        emit({"type": "error", "code": exc.code, "message": str(exc)})
    except MemoryError:
        emit({"type": "error", "code": "OOM", "message": "the worker ran out of its memory limit"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
