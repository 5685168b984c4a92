"""Run a ``.pte`` (the executorch format) on the device: load it with ``executorch.runtime``, call it with numpy.

Only the worker process imports this, and only for ``.pte`` artifacts: the ExecuTorch runtime imports torch, so a
device runs them only where the ``executorch`` extra is installed (:func:`executorch_available`); elsewhere the
agent refuses them with FAILED_PRECONDITION, as it does TorchScript without torch.

Contract: :func:`load` returns ``(call, declared_shape, dtype, version)``; ``call`` takes a C-contiguous numpy
array (NCHW, the program's input dtype) and returns the first output as numpy. edge-opt's programs are planned for
batch 1 (``declared_shape[0]``): the worker must refuse a benchmark batch size above it (the runtime fails on it)
rather than slice, so that a figure always means one call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

#: ``c10::ScalarType`` codes the runtime's tensor metadata reports, for the inputs edge-opt exports.
_SCALAR_TYPES = {5: "float16", 6: "float32"}
#: Resetting the runtime's thread pool (``_unsafe_reset_threadpool``) is followed by crashes and hangs under test here;
#: until that is understood the pool keeps its default size (the number of cores) and the thread setting is reported.
_SAFE_TO_RESET = False


class ExecutorchLoadError(RuntimeError):
    """The runtime refused the program (corrupt file, missing operator or delegate)."""


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


def load(path: str, threads: int = 1) -> tuple[Callable[[Any], Any], list[int], str, str]:
    """Load the program's ``forward`` method; XNNPACK's thread pool is set to ``threads``.

    Raises:
        ExecutorchLoadError: the file is not a program the runtime can load.
    """
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    try:
        method = Runtime.get().load_program(path).load_method("forward")
    except Exception as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ExecutorchLoadError(f"the ExecuTorch runtime cannot load the program: {first}") from None
    if threads != portable_lib._threadpool_get_thread_count() and _SAFE_TO_RESET:
        portable_lib._unsafe_reset_threadpool(threads)
    meta = method.metadata.input_tensor_meta(0)
    dtype = _SCALAR_TYPES.get(int(meta.dtype()), "float32")

    def call(x: Any) -> Any:
        return method.execute([torch.from_numpy(x)])[0].float().numpy()

    return call, [int(s) for s in meta.sizes()], dtype, executorch_version()
