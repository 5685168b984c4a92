"""ONNX artifacts (``model.onnx``) with ONNX Runtime: the guard's checks in the store and again in the worker,
sessions opened from bytes with the run's threads and graph-optimisation level."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from edge_agent.contract.errors import ArtifactRejected
from edge_agent.runtimes import onnx_guard
from edge_agent.runtimes.base import Opened, Runtime, RuntimeInfo, WorkerError, fixed_batches
from edge_agent.runtimes.onnx_session import OPTIMIZATION_LEVELS, input_spec, open_session


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


class OnnxRuntime(Runtime):
    format_name: ClassVar[str] = "onnx"
    module: ClassVar[str] = "onnxruntime"
    graph_optimization: ClassVar[bool] = True

    def describe(self, version: str, details: dict[str, Any]) -> RuntimeInfo:
        return RuntimeInfo(self.device_name, version, providers=list(details.get("providers") or []))

    def missing(self, worker_python: str) -> str:
        return (
            f"ONNX artifacts need onnxruntime, which the benchmark workers' Python ({worker_python}) does "
            "not have: install edge-opt[agent] for it"
        )

    def check_content(self, path: Path) -> None:
        onnx_guard.check_model_file(str(path))

    def prepare(self, model: bytes) -> None:
        import onnxruntime  # noqa: F401 - imported before confinement: it reads its own files at import

        try:
            onnx_guard.check_model_bytes(model)  # again, on the bytes this worker will load
        except ArtifactRejected as exc:
            raise WorkerError("MODEL_INVALID", str(exc)) from None

    def open(self, model: bytes, request: dict[str, Any]) -> Opened:
        import onnxruntime as ort  # the worker's interpreter has it (checked before the run was accepted)

        settings = request["settings"]
        optimization = settings["graph_optimization"].removeprefix("GRAPH_OPT_").lower()
        if optimization == "unspecified":
            optimization = "all"
        if optimization not in OPTIMIZATION_LEVELS:  # settings admit only the proto's levels: a bug if reached
            raise WorkerError("RUNTIME_ERROR", f"graph optimisation {settings['graph_optimization']!r} has no ONNX Runtime level")
        try:
            session = open_session(model, threads=settings["threads"], optimization=optimization)
        except Exception as exc:
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if "bad_alloc" in first:  # the address-space limit (RLIMIT_AS), not the model
                raise WorkerError("OOM", f"the worker ran out of its memory limit loading the model: {first}") from None
            raise WorkerError("MODEL_INVALID", f"onnxruntime cannot load the model: {first}") from None
        name, shape, dtype = input_spec(session)
        declared = onnx_input_shape(shape, request["input"].get("shape") or [])

        def call(x: Any) -> Any:
            return session.run(None, {name: x})[0]

        # A file that fixes its batch takes exactly that many items: the evaluation feeds it that many at a time.
        fixed = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else 0
        return Opened(call, declared, dtype, ort.__version__, evaluate=fixed_batches(call, fixed) if fixed else None)


RUNTIME = OnnxRuntime()
