"""LiteRT models (``model.tflite``) with ai-edge-litert's interpreter and its XNNPACK delegate, torch-free.

Used on both sides: the device's worker opens a pushed ``.tflite`` through :data:`RUNTIME`, and the host's litert
format (``edge_opt.formats.litert``) loads the file it wrote back through :class:`LiteRTModel`, so that both feed a
float batch to the model the same way:

* an integer input (a full-integer INT8 model) is quantized with the input's scale and zero point,
  ``q = clip(round(x / scale) + zero_point)``, and an integer output is dequantized, ``y = (q - zero_point) * scale``;
  a float16 input gets a cast. The caller always gives float32 NCHW and gets float32 back.
* the model's batch is the file's (edge-opt writes batch 1). A call with more items runs a copy of the interpreter
  resized to that batch when the resized model gives the same outputs as item-by-item calls (models whose reshapes
  bake in the batch refuse the resize or compute something else: both are detected), else it runs the items in
  planned-batch slices, the last one padded.

The store checks a pushed file's content cheaply (:func:`check_content_bytes`: size, the FlatBuffer identifier
``TFL3`` at bytes 4..8, the root table's offset inside the file); the interpreter's own FlatBuffer verifier then
refuses what is malformed inside (out-of-range buffers, tensor or opcode indices, overflowing shapes) with
ValueError or RuntimeError, which the worker reports as MODEL_INVALID.

ai-edge-litert ships its own copies of protobuf's well-known types (``ai_edge_litert/*_pb2.py``); importing them
beside ``google.protobuf``'s fails. Only ``ai_edge_litert.interpreter`` is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from edge_agent.contract.errors import ArtifactRejected
from edge_agent.runtimes.base import Opened, Runtime, RuntimeInfo, WorkerError

#: A LiteRT model is a FlatBuffer whose file identifier, at bytes 4..8, is "TFL3".
TFLITE_IDENTIFIER = b"TFL3"
#: The root offset and the identifier, and at least a root table: anything shorter is not a model.
MIN_BYTES = 16
#: The delegate the interpreter applies by default on CPU, and the input layout edge-opt's files take.
DELEGATE = "XNNPACK"
LAYOUT = "NCHW"
#: Largest difference (relative to the outputs' scale) a resized interpreter may show against item-by-item calls.
_RESIZE_TOLERANCE = 1e-4


class LiteRTLoadError(RuntimeError):
    """The interpreter refused the model (malformed file, unsupported operator, impossible shapes)."""


def check_content_bytes(head: bytes, size: int) -> str | None:
    """Why a file of ``size`` bytes starting with ``head`` (at least its first 8 bytes) is not a LiteRT model, or None."""
    if size < MIN_BYTES:
        return f"{size} bytes is too short for a LiteRT model"
    if head[4:8] != TFLITE_IDENTIFIER:
        return f"its FlatBuffer identifier is {head[4:8]!r}, not {TFLITE_IDENTIFIER!r}"
    root = int.from_bytes(head[:4], "little")
    if not 8 <= root < size:
        return f"its root table offset {root} lies outside the file of {size} bytes"
    return None


def litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return ""


def quantize_input(x: Any, detail: dict[str, Any]) -> Any:
    """A float batch as the model's input tensor takes it: quantized for an integer input, cast otherwise."""
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        scale, zero_point = detail["quantization"]
        if not scale:
            raise LiteRTLoadError(f"the model's {dtype.name} input has no quantization scale")
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def dequantize_output(y: Any, detail: dict[str, Any]) -> Any:
    """The model's output tensor as float32: dequantized for an integer output."""
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        scale, zero_point = detail["quantization"]
        return (np.asarray(y, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale or 1.0)
    return np.asarray(y, dtype=np.float32)


def quantization_of(detail: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's record of an integer tensor's quantization (dtype, scale, zero point); None for a float one."""
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return None
    scale, zero_point = detail["quantization"]
    return {"dtype": dtype.name, "scale": float(scale), "zero_point": int(zero_point)}


class LiteRTModel:
    """A ``.tflite`` in ai-edge-litert's interpreter (XNNPACK by default): float32 in, float32 out, any batch."""

    def __init__(self, model: bytes, *, threads: int = 0) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.model = model
        self.threads = threads
        self.version = litert_version()
        self._interpreter = self._make(Interpreter, None)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1:
            raise LiteRTLoadError(f"the model has {len(inputs)} inputs; edge-opt runs models with exactly one")
        if not outputs:
            raise LiteRTLoadError("the model has no outputs")
        self.input, self.output = inputs[0], outputs[0]
        shape = [int(d) for d in self.input["shape"]]
        if not shape or shape[0] < 1 or any(d < 1 for d in shape):
            raise LiteRTLoadError(f"the model's input shape {shape} has no batch dimension or a non-positive size")
        #: The input shape the file declares (batch first) and its batch: what one invoke takes.
        self.declared: list[int] = shape
        self.batch = shape[0]
        self._resized: dict[int, Any] = {}
        self._unresizable: set[int] = set()

    def _make(self, interpreter_type: Any, batch: int | None) -> Any:
        try:
            interpreter = interpreter_type(model_content=self.model, num_threads=self.threads if self.threads > 0 else None)
            if batch is not None:
                detail = interpreter.get_input_details()[0]
                interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]], strict=False)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise LiteRTLoadError(f"the LiteRT interpreter cannot load the model: {_first_line(exc)}") from None
        return interpreter

    def delegated(self) -> bool:
        """Whether XNNPACK took (part of) the graph: its plan has a DELEGATE node (the interpreter's own listing)."""
        try:
            return any(op.get("op_name") == "DELEGATE" for op in self._interpreter._get_ops_details())
        except Exception:  # a private listing: absent or changed in another release
            return False

    def invoke(self, x: Any, interpreter: Any = None) -> Any:
        """One invoke on exactly the interpreter's batch (float32 in, float32 out)."""
        it = interpreter or self._interpreter
        detail = it.get_input_details()[0]
        it.set_tensor(detail["index"], quantize_input(x, detail))
        it.invoke()
        out = it.get_output_details()[0]
        return dequantize_output(it.get_tensor(out["index"]), out)

    def resized(self, batch: int) -> Any | None:
        """An interpreter resized to ``batch`` that matches item-by-item calls, or None when the model refuses it."""
        if batch == self.batch:
            return self._interpreter
        if batch in self._resized:
            return self._resized[batch]
        if batch in self._unresizable or batch % self.batch:
            return None
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = self._make(Interpreter, batch)
            x = np.random.default_rng(0).standard_normal([batch, *self.declared[1:]]).astype(np.float32)
            whole = self.invoke(x, interpreter)
            parts = self.sliced(x)
            scale = max(1e-6, float(np.abs(parts).max()))
            if whole.shape != parts.shape or float(np.abs(whole - parts).max()) > _RESIZE_TOLERANCE * scale:
                raise LiteRTLoadError("the resized model computes something else")
        except (LiteRTLoadError, ValueError, RuntimeError):
            self._unresizable.add(batch)
            return None
        self._resized[batch] = interpreter
        return interpreter

    def sliced(self, x: Any) -> Any:
        """Any number of items in planned-batch invokes, the last slice padded with zeros and its padding dropped."""
        import numpy as np

        outs = []
        for start in range(0, len(x), self.batch):
            part = x[start : start + self.batch]
            items = len(part)
            if items < self.batch:
                part = np.concatenate([part, np.zeros((self.batch - items, *part.shape[1:]), part.dtype)])
            outs.append(self.invoke(np.ascontiguousarray(part))[:items])
        return np.concatenate(outs)

    def __call__(self, x: Any) -> Any:
        if len(x) == self.batch:
            return self.invoke(x)
        return self.sliced(x)

    def runner_for(self, batch: int) -> Any:
        """The call a batch of ``batch`` items is timed with: one invoke of a resized interpreter when the model
        takes it, else planned-batch slices."""
        interpreter = self.resized(batch)
        if interpreter is None:
            return self.sliced
        return lambda x: self.invoke(x, interpreter)

    def manifest(self) -> dict[str, Any]:
        """What the manifest records about the model as the interpreter sees it."""
        return {
            "runtime": "ai-edge-litert",
            "runtime_version": self.version,
            "delegate": DELEGATE if self.delegated() else "none",
            "input_layout": LAYOUT,
            "input_shape": self.declared,
            "input_dtype": _dtype_name(self.input),
            "input_quantization": quantization_of(self.input),
            "output_quantization": quantization_of(self.output),
        }


def _dtype_name(detail: dict[str, Any]) -> str:
    import numpy as np

    return np.dtype(detail["dtype"]).name


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def load(model: bytes | str, *, threads: int = 0) -> LiteRTModel:
    """A LiteRT model from bytes or a path, content checked first.

    Raises:
        LiteRTLoadError: the file is not a LiteRT model, or the interpreter refuses it.
    """
    data = Path(model).read_bytes() if isinstance(model, str) else model
    why = check_content_bytes(data[:8], len(data))
    if why is not None:
        raise LiteRTLoadError(f"not a LiteRT model: {why}")
    return LiteRTModel(data, threads=threads)


class LiteRTRuntime(Runtime):
    format_name: ClassVar[str] = "litert"
    module: ClassVar[str] = "ai_edge_litert.interpreter"

    def describe(self, version: str, details: dict[str, Any]) -> RuntimeInfo:
        return RuntimeInfo(self.device_name, version, providers=[DELEGATE])

    def missing(self, worker_python: str) -> str:
        return (
            f"a litert artifact (.tflite) needs ai-edge-litert, which the benchmark workers' Python ({worker_python}) "
            "does not have: install edge-opt[agent] for it"
        )

    def check_content(self, path: Path) -> None:
        with path.open("rb") as fh:
            head = fh.read(8)
        why = check_content_bytes(head, path.stat().st_size)
        if why is not None:
            raise ArtifactRejected(f"a litert artifact must be a LiteRT model (.tflite); this file is not: {why}")

    def prepare(self, model: bytes) -> None:
        import ai_edge_litert.interpreter  # noqa: F401 - before confinement: it loads its native library at import

        why = check_content_bytes(model[:8], len(model))
        if why is not None:
            raise WorkerError("MODEL_INVALID", f"not a LiteRT model: {why}")

    def open(self, model: bytes, request: dict[str, Any]) -> Opened:
        """The interpreter with the run's threads and XNNPACK; float32 in (integer inputs are quantized inside)."""
        settings = request["settings"]
        try:
            lite = LiteRTModel(model, threads=settings["threads"])
            timed = lite.runner_for(settings["batch_size"])
        except LiteRTLoadError as exc:
            raise WorkerError("MODEL_INVALID", str(exc)) from None
        except MemoryError:
            raise WorkerError("OOM", "the worker ran out of its memory limit loading the model") from None
        return Opened(timed, list(lite.declared), "float32", lite.version, evaluate=lite)


RUNTIME = LiteRTRuntime()
