"""The benchmark worker: the only code that loads an (untrusted) model. Runs as a subprocess per run.

Runtimes: onnxruntime (ONNX), torch (TorchScript), executorch (``.pte``, through :mod:`edge_agent.runtimes.executorch_program`).

    python -m edge_agent.worker.main < request.json

Protocol: one JSON request on stdin; JSON lines on the pipe named by ``EDGE_AGENT_RESULT_FD`` (not stdout: a
model can print, and stdout is redirected to stderr): ``{"type": "progress", "phase", "done", "total"}`` while it
works, then exactly one ``{"type": "result", ...}`` or ``{"type": "error", "code", "message"}``; the parent
accepts a result only from a worker that exits 0.
The parent (:mod:`edge_agent.runs.manager`) owns the timeout, the process group and the accounting; a crash or a hang
here kills only this process.

Defence in depth against a hostile model (the store's :mod:`edge_agent.runtimes.onnx_guard` already refused it once):
the parent starts this process in an empty scratch directory with a scrubbed environment; the model file is
read into memory and checked again, then :func:`edge_agent.worker.confine.confine` takes the filesystem away (Landlock,
where the kernel has it), and only then does the runtime load the model, from bytes, so there is no model
directory for external data to resolve against.

Peak RSS is the kernel's ``ru_maxrss`` of this process: no polling thread runs beside the timing loop, so the
memory figure cannot disturb the latency figures.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.contract.errors import OUT_OF_MEMORY_MARKERS, ArtifactRejected
from edge_agent.runtimes.onnx_session import OPTIMIZATION_LEVELS, input_spec, open_session
from edge_agent.worker.confine import Confinement, confine
from edge_agent.worker.evaluation import fixed_batches
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


class WorkerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


def _onnx_runner(model: bytes, settings: dict[str, Any]) -> tuple[Any, str, list[Any], str, str]:
    import onnxruntime as ort

    optimization = settings["graph_optimization"].removeprefix("GRAPH_OPT_").lower()
    if optimization == "unspecified":
        optimization = "all"
    if optimization not in OPTIMIZATION_LEVELS:  # settings.py admits only the proto's levels: a bug if reached
        raise WorkerError("RUNTIME_ERROR", f"graph optimisation {settings['graph_optimization']!r} has no ONNX Runtime level")
    try:
        session = open_session(model, threads=settings["threads"], optimization=optimization)
    except Exception as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if "bad_alloc" in first:  # the address-space limit (RLIMIT_AS), not the model
            raise WorkerError("OOM", f"the worker ran out of its memory limit loading the model: {first}") from None
        raise WorkerError("MODEL_INVALID", f"onnxruntime cannot load the model: {first}") from None
    name, shape, dtype = input_spec(session)
    return session, name, shape, dtype, ort.__version__


def memory_budget(limit: int) -> int:
    """What a program may plan: the worker's memory limit when set, else the device's physical memory."""
    if limit > 0:
        return limit
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def _executorch_runner(model: bytes, settings: dict[str, Any], memory_limit: int) -> tuple[Any, list[int], str, str]:
    """A ``.pte`` through :mod:`edge_agent.runtimes.executorch_program`: the pool gets ``threads`` (a fresh process: safe)."""
    from edge_agent.runtimes.executorch_program import ExecutorchLoadError, load

    try:
        program = load(model, threads=settings["threads"], max_planned_bytes=memory_budget(memory_limit))
    except ExecutorchLoadError as exc:
        raise WorkerError("MODEL_INVALID", str(exc)) from None
    planned = program.declared_shape[0] if program.declared_shape else 0
    if settings["batch_size"] > planned:
        raise WorkerError(
            "RUNTIME_ERROR",
            f"this ExecuTorch program is planned for batch {planned}; benchmark it with --batch-size {planned} or less",
        )
    return program.call, program.declared_shape, program.dtype, program.version


def _in_slices(call: Any, planned: int) -> Any:
    """``call`` over a batch larger than the program is planned for, one planned batch at a time (the evaluation)."""
    import numpy as np

    def sliced(x: Any) -> Any:
        return np.concatenate([call(np.ascontiguousarray(x[i : i + planned])) for i in range(0, len(x), planned)])

    return sliced


def load_confined(
    runtime: str, model_path: str, readable: list[str] | None = None, private: list[str] | None = None
) -> tuple[bytes, Confinement]:
    """Read the model, import its runtime and re-check the model (:data:`RUNNERS`), then confine this process;
    returns the model bytes."""
    runner = RUNNERS.get(runtime)
    if runner is None:  # a format added without a runner here: fail loudly, never run it with another runtime
        raise WorkerError("RUNTIME_ERROR", f"this worker has no runner for runtime {runtime!r}")
    model = _read_model(model_path)
    runner.prepare(model)
    # ``readable``: the run's evaluation-set files, read after the timed loop (read-only, those files alone);
    # ``private``: the agent's store and secrets, unreadable even where the Python path holds them.
    return model, confine(os.getcwd(), extra_read=readable, private=private)  # noqa: PTH109 - a string path, as Landlock takes it


@dataclass
class Opened:
    """A model opened by its runtime: the timed ``call``, the ``evaluate`` call (the timed one unless the runtime
    needs batches sliced), the declared input shape (batch first), its dtype and the runtime's version."""

    call: Callable[[Any], Any]
    declared: list[Any]
    dtype: str
    version: str
    evaluate: Callable[[Any], Any] | None = None


def onnx_input_shape(model_shape: list[Any], manifest_shape: list[Any]) -> list[Any]:
    """The shape an ONNX model is fed: the model's own, with the manifest's batch dimension, and the manifest's
    sizes where the model leaves a dimension dynamic or declares no shape at all (a user's model file benchmarked
    with ``--input-shape``). Where both give a size, the model's wins (a mismatch is the runtime's error)."""
    if not manifest_shape:
        return model_shape
    if not model_shape:  # no declared rank
        return manifest_shape
    if len(model_shape) != len(manifest_shape):
        return model_shape
    fixed = [d if isinstance(d, int) and d > 0 else m for d, m in zip(model_shape[1:], manifest_shape[1:], strict=True)]
    return [manifest_shape[0], *fixed]


def _open_onnx(model: bytes, request: dict[str, Any]) -> Opened:
    session, name, shape, dtype, version = _onnx_runner(model, request["settings"])
    declared = onnx_input_shape(shape, request["input"].get("shape") or [])

    def call(x: Any) -> Any:
        return session.run(None, {name: x})[0]

    # A file that fixes its batch takes exactly that many items: the evaluation feeds it that many at a time.
    fixed = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else 0
    return Opened(call, declared, dtype, version, evaluate=fixed_batches(call, fixed) if fixed else None)


def _open_executorch(model: bytes, request: dict[str, Any]) -> Opened:
    call, declared, dtype, version = _executorch_runner(model, request["settings"], request.get("memory_limit_bytes") or 0)
    return Opened(call, declared, dtype, version, evaluate=_in_slices(call, declared[0]))


def _open_torchscript(model: bytes, request: dict[str, Any]) -> Opened:
    import torch

    torch.set_num_threads(request["settings"]["threads"])
    engine = request.get("torch_engine")
    if engine:
        if engine not in torch.backends.quantized.supported_engines:
            raise WorkerError("RUNTIME_ERROR", f"torch here lacks the quantized engine {engine!r} the artifact was built for")
        torch.backends.quantized.engine = engine
    try:
        module = torch.jit.load(io.BytesIO(model), map_location="cpu").eval()
    except Exception as exc:
        raise WorkerError("MODEL_INVALID", f"torch.jit.load failed: {str(exc).splitlines()[0][:300]}") from None
    dtype = request["input"].get("dtype", "float32")
    torch_dtype = torch.float16 if dtype == "float16" else torch.float32

    def call(x: Any) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(torch_dtype)).float().numpy()

    return Opened(call, request["input"]["shape"], dtype, torch.__version__)


def _prepare_onnx(model: bytes) -> None:
    import onnxruntime  # noqa: F401 - imported before confinement: it reads its own files at import

    from edge_agent.runtimes import onnx_guard

    try:
        onnx_guard.check_model_bytes(model)  # again, on the bytes this worker will load
    except ArtifactRejected as exc:
        raise WorkerError("MODEL_INVALID", str(exc)) from None


def _prepare_executorch(_model: bytes) -> None:
    import executorch.runtime  # noqa: F401 - before confinement (it imports torch, which reads its own files)


def _prepare_torchscript(_model: bytes) -> None:
    import torch  # noqa: F401 - before confinement: it reads its own files at import


@dataclass(frozen=True)
class Runner:
    """What the worker does for one runtime: ``prepare`` before confinement (imports, checks of the bytes),
    ``open`` after it."""

    prepare: Callable[[bytes], None]
    open: Callable[[bytes, dict[str, Any]], Opened]


#: One runner per runtime (edge_agent.contract.formats names the runtime of each artifact format).
RUNNERS: dict[str, Runner] = {
    "onnxruntime": Runner(_prepare_onnx, _open_onnx),
    "executorch": Runner(_prepare_executorch, _open_executorch),
    "torchscript": Runner(_prepare_torchscript, _open_torchscript),
}


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
    opened = RUNNERS[runtime].open(model, request)  # load_confined refused any runtime without a runner
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
        from edge_agent.worker import evaluation as device_evaluation

        emit({"type": "progress", "phase": "evaluating", "done": 0, "total": 0})
        evaluation = device_evaluation.evaluate(evaluate_call, request["eval_paths"], dtype, dims[1:])
    latency = {
        "count": stats.count,
        "mean_ms": stats.mean_ms,
        "std_ms": stats.std_ms,
        "min_ms": stats.min_ms,
        "max_ms": stats.max_ms,
        "p50_ms": stats.p50_ms,
        "p90_ms": stats.p90_ms,
        "p95_ms": stats.p95_ms,
        "p99_ms": stats.p99_ms,
        "throughput_per_s": stats.throughput(settings["batch_size"]),
        "samples_ms": kept_samples(stats.samples_ms) if settings.get("keep_samples") else [],
    }
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
