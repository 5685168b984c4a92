"""Run a ``.pte`` (the executorch format) with ``executorch.runtime``: the one ExecuTorch runner, for the agent's
worker and for the host's validation and latency (``edge_opt.formats.executorch.PteRunner`` wraps it).

Only the worker process imports this on a device, and only for ``.pte`` artifacts: the ExecuTorch runtime imports
torch, so a device runs them only where the ``executorch`` extra is installed (:func:`executorch_available`);
elsewhere the agent refuses them with FAILED_PRECONDITION, as it does TorchScript without torch.

Contract: :func:`load` returns a :class:`PteProgram`; its ``call`` takes a C-contiguous numpy array (NCHW, the
program's input dtype, at most ``declared_shape[0]`` items) and returns the first output as numpy. edge-opt's
programs are planned for batch 1: the worker refuses a larger benchmark batch (the runtime fails on it) rather
than slicing, so that a figure always means one call; the host slices its validation batches.

**The thread pool.** XNNPACK's thread pool is one per process, and every loaded method keeps a pointer to it
(the XNNPACK runtime is created with it when the method loads). ``_unsafe_reset_threadpool`` destroys that pool
and makes a new one: a method loaded before the reset then runs on freed memory, which crashes the process
(SIGSEGV) or hangs it on a futex, now and then, depending on what reused the memory. So the pool is sized at most
once per process, before the first program loads (:func:`set_threads`); afterwards a different request is not
honoured, and the size in use is reported. The agent's worker is a new process per run, so a device gets the
requested threads; the host keeps the pool it first set.
"""

from __future__ import annotations

import importlib.util
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``c10::ScalarType`` codes the runtime's tensor metadata reports, for the inputs edge-opt exports.
_SCALAR_TYPES = {5: "float16", 6: "float32"}
#: Set once a program has been loaded in this process: from then on the thread pool must not be reset.
_loaded = threading.Event()
_lock = threading.Lock()


class ExecutorchLoadError(RuntimeError):
    """The runtime refused the program (corrupt file, missing operator or delegate)."""


@dataclass
class PteProgram:
    """A loaded ``forward`` method: ``call(x)`` runs it; the shape and dtype are the program's planned input."""

    call: Callable[[Any], Any]
    declared_shape: list[int]
    dtype: str
    version: str
    threads: int  # the size of the thread pool the method runs on


def executorch_available() -> bool:
    """Is the ExecuTorch runtime installed (without importing it: that imports torch)?"""
    try:
        return importlib.util.find_spec("executorch.runtime") is not None
    except ModuleNotFoundError:
        return False


def executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return ""


def thread_count() -> int:
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())


def set_threads(threads: int) -> int:
    """Size the process's XNNPACK thread pool to ``threads`` if no program has been loaded yet; returns the size in use.

    After a load the pool is left as it is (see the module docstring: resetting it under a loaded method is what
    crashed or hung the process).
    """
    from executorch.extension.pybindings import portable_lib

    with _lock:
        if threads > 0 and not _loaded.is_set() and threads != portable_lib._threadpool_get_thread_count():
            portable_lib._unsafe_reset_threadpool(threads)
        return int(portable_lib._threadpool_get_thread_count())


#: Bounds of what the memory-plan reader walks (real programs have one plan and a handful of buffers).
MAX_EXECUTION_PLANS = 64
MAX_PLANNED_BUFFERS = 1024


class _FlatBuffer:
    """Bounds-checked reads of a FlatBuffer (bytes, or a read-only memory map of a file): every offset the file
    holds is checked before it is followed, so a corrupt or hostile program is an :class:`ExecutorchLoadError`."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.size = len(data)

    def scalar(self, fmt: str, pos: int) -> Any:
        if not 0 <= pos <= self.size - struct.calcsize(fmt):
            raise ExecutorchLoadError("cannot load the program: its FlatBuffer points outside the file")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return int(self.scalar("<I", pos))

    def i32(self, pos: int) -> int:
        return int(self.scalar("<i", pos))

    def table(self, pos: int) -> int:
        """The table a uoffset at ``pos`` points to (a vector entry or a table field)."""
        return pos + self.u32(pos)

    def field(self, table: int, index: int) -> int | None:
        """Where field ``index`` of the table at ``table`` is, or None when absent."""
        vtable = table - self.i32(table)
        size = int(self.scalar("<H", vtable))
        slot = 4 + 2 * index
        if slot + 2 > size or vtable + slot + 2 > self.size:
            return None
        offset = int(self.scalar("<H", vtable + slot))
        return table + offset if offset else None

    def vector(self, pos: int, item: int) -> tuple[int, int]:
        """The first element and the length of the vector a field at ``pos`` points to."""
        start = self.table(pos)
        count = self.u32(start)
        if start + 4 + count * item > self.size:
            raise ExecutorchLoadError("cannot load the program: a vector in its FlatBuffer runs past the file")
        return start + 4, count

    def string(self, pos: int, limit: int = 256) -> str:
        start, count = self.vector(pos, 1)
        return bytes(self.data[start : start + min(count, limit)]).decode("utf-8", errors="replace")

    def plans(self) -> tuple[int, int]:
        """``Program.execution_plan``: the first entry and the number of plans (bounded)."""
        plans = self.field(self.u32(0), 1)
        if plans is None:
            return 0, 0
        base, count = self.vector(plans, 4)
        if count > MAX_EXECUTION_PLANS:  # bounded work: entries may all point at one plan
            raise ExecutorchLoadError(
                f"the program has {count} execution plans; edge-opt runs programs with a few: re-export it with "
                "edge-export --format executorch"
            )
        return base, count


def planned_memory_bytes(program: Any) -> int:
    """The working memory a ``.pte`` plans for its methods (the sum of every execution plan's non-constant buffers,
    ``ExecutionPlan.non_const_buffer_sizes`` in ExecuTorch's ``program.fbs``), read from the FlatBuffer without
    loading it: the runtime allocates it when a method loads, sized by whatever the file says.

    Raises:
        ExecutorchLoadError: the bytes are not a readable program FlatBuffer.
    """
    fb = _FlatBuffer(program)
    total = 0
    base, count = fb.plans()
    for i in range(count):
        sizes = fb.field(fb.table(base + 4 * i), 8)  # ExecutionPlan.non_const_buffer_sizes
        if sizes is None:
            continue
        start, n = fb.vector(sizes, 8)
        if n > MAX_PLANNED_BUFFERS:
            fix = "re-export it with edge-export --format executorch"
            raise ExecutorchLoadError(f"an execution plan lists {n} memory buffers; {fix}")
        # Entry 0 is reserved (the constants); the rest are the planned buffers.
        total += sum(max(0, struct.unpack_from("<q", program, start + 8 * j)[0]) for j in range(1, n))
    return total


#: ``KernelTypes`` union tag of a ``Tensor`` in an ``EValue`` (FlatBuffers numbers a union's members from 1).
_EVALUE_TENSOR = 5
#: Dimensions of an input the signature reader accepts (edge-opt feeds (batch, ...) tensors).
MAX_INPUT_RANK = 8


def program_input(program: Any) -> tuple[list[int], str]:
    """The ``forward`` method's one input (shape, dtype), read from the FlatBuffer without the ExecuTorch runtime
    (the host reads a user's ``.pte`` with only the ``agent`` extra): the plan named ``forward``, its
    ``inputs[0]`` in its ``values``, a ``Tensor`` with ``scalar_type`` and ``sizes``. The same checks as the
    runtime's signature (:func:`_checked_signature`): one float input with a batch dimension.

    Raises:
        ExecutorchLoadError: not a readable program, or one whose input edge-opt cannot feed, naming why.
    """
    fb = _FlatBuffer(program)
    base, count = fb.plans()
    names = []
    for i in range(count):
        plan = fb.table(base + 4 * i)
        name = fb.field(plan, 0)  # ExecutionPlan.name
        names.append(fb.string(name) if name is not None else "")
        if names[-1] == "forward":
            break
    else:
        raise ExecutorchLoadError(f"the program has no 'forward' method (it has {sorted(names)[:8]})")
    inputs, values = fb.field(plan, 3), fb.field(plan, 2)  # ExecutionPlan.inputs, .values
    first, n_inputs = fb.vector(inputs, 4) if inputs is not None else (0, 0)
    if n_inputs != 1:
        raise ExecutorchLoadError(f"the program's forward takes {n_inputs} inputs; edge-opt runs one image tensor")
    start, n_values = fb.vector(values, 4) if values is not None else (0, 0)
    index = fb.i32(first)
    if not 0 <= index < n_values:
        raise ExecutorchLoadError("cannot load the program: its input names a value it does not have")
    evalue = fb.table(start + 4 * index)
    tag, value = fb.field(evalue, 0), fb.field(evalue, 1)  # EValue.val_type, EValue.val
    if tag is None or value is None or int(fb.scalar("<B", tag)) != _EVALUE_TENSOR:
        raise ExecutorchLoadError("the program's forward takes something that is not a tensor")
    tensor = fb.table(value)
    scalar, sizes = fb.field(tensor, 0), fb.field(tensor, 2)  # Tensor.scalar_type, Tensor.sizes
    scalar_type = int(fb.scalar("<b", scalar)) if scalar is not None else 0
    dtype = _SCALAR_TYPES.get(scalar_type)
    if dtype is None:
        raise ExecutorchLoadError(f"the program's input has scalar type {scalar_type}; edge-opt feeds float32 or float16")
    dims, rank = fb.vector(sizes, 4) if sizes is not None else (0, 0)
    if rank > MAX_INPUT_RANK:
        raise ExecutorchLoadError(f"the program's input has {rank} dimensions; edge-opt feeds at most {MAX_INPUT_RANK}")
    shape = [fb.i32(dims + 4 * j) for j in range(rank)]
    if len(shape) < 2 or shape[0] < 1 or any(d < 1 for d in shape):
        raise ExecutorchLoadError(f"the program's input has shape {shape}; edge-opt feeds (batch, ...) with batch >= 1")
    return shape, dtype


def load(model: bytes | str, threads: int = 0, max_planned_bytes: int = 0) -> PteProgram:
    """Load the program's ``forward`` method from bytes or a path; ``threads`` > 0 asks for that pool size; a
    program (bytes) planning more than ``max_planned_bytes`` of working memory (> 0) is refused before it loads.

    Raises:
        ExecutorchLoadError: the data is not a program the runtime can load, or plans more memory than allowed.
    """
    if max_planned_bytes > 0 and isinstance(model, bytes):
        planned = planned_memory_bytes(model)
        if planned > max_planned_bytes:
            raise ExecutorchLoadError(
                f"the program plans {planned / 2**20:.0f} MiB of working memory; this worker may use "
                f"{max_planned_bytes / 2**20:.0f} MiB (--memory-limit-mb, or the device's memory)"
            )
    import torch
    from executorch.runtime import Runtime

    in_use = set_threads(threads)
    with _lock:
        _loaded.set()  # before the load: a failed load may still have created XNNPACK state that points at the pool
        try:
            program = Runtime.get().load_program(model)
            if "forward" not in program.method_names:
                raise ExecutorchLoadError(f"the program has no 'forward' method (it has {sorted(program.method_names)[:8]})")
            # Its declared input and outputs are checked before the method is loaded: loading allocates the
            # program's planned memory, whose size the file decides.
            shape, dtype = _checked_signature(program.metadata("forward"))
            method = program.load_method("forward")
        except ExecutorchLoadError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise ExecutorchLoadError(f"the ExecuTorch runtime cannot load the program: {first}") from None

    def call(x: Any, _program: Any = program) -> Any:  # the program object lives as long as its method is used
        return method.execute([torch.from_numpy(x)])[0].float().numpy()

    return PteProgram(call, shape, dtype, executorch_version(), in_use)


#: Largest input or output tensor a program may declare (elements): the worker's own input cap.
MAX_TENSOR_ELEMENTS = 1 << 28


def _checked_signature(meta: Any) -> tuple[list[int], str]:
    """The program's one input (shape, dtype) after checking what edge-opt runs: one float input with a batch
    dimension, tensor outputs, nothing larger than :data:`MAX_TENSOR_ELEMENTS`.

    Raises:
        ExecutorchLoadError: naming what the program declares and what is expected.
    """
    if meta.num_inputs() != 1:
        raise ExecutorchLoadError(f"the program's forward takes {meta.num_inputs()} inputs; edge-opt runs one image tensor")
    if meta.num_outputs() < 1:
        raise ExecutorchLoadError("the program's forward has no outputs")
    try:
        tensor = meta.input_tensor_meta(0)
        outputs = [meta.output_tensor_meta(i) for i in range(meta.num_outputs())]
    except Exception as exc:  # a non-tensor input or output (a scalar, a list) has no tensor metadata
        raise ExecutorchLoadError(f"the program's forward takes or returns something that is not a tensor ({exc})") from None
    dtype = _SCALAR_TYPES.get(int(tensor.dtype()))
    if dtype is None:
        raise ExecutorchLoadError(f"the program's input has scalar type {int(tensor.dtype())}; edge-opt feeds float32 or float16")
    shape = [int(s) for s in tensor.sizes()]
    if len(shape) < 2 or shape[0] < 1:
        raise ExecutorchLoadError(f"the program's input has shape {shape}; edge-opt feeds (batch, ...) with batch >= 1")
    for what, sizes in [("input", shape), *(("output", [int(s) for s in o.sizes()]) for o in outputs)]:
        elements = 1
        for size in sizes:
            elements *= max(size, 0)
        if elements > MAX_TENSOR_ELEMENTS:
            raise ExecutorchLoadError(
                f"the program's {what} has {elements} elements (shape {sizes[:8]}), more than the cap of {MAX_TENSOR_ELEMENTS}"
            )
    return shape, dtype
