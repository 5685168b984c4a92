"""The ``executorch`` format: a ``.pte`` program with the XNNPACK delegate, its runner, and its build in the pipeline.

Export: ``torch.export`` of the FP32 model, its half-precision copy, or the PT2E INT8 model (:mod:`edge_opt.quant.pt2e`),
checked with a dynamic batch at batch 1 and 2, then exported for batch 1 (the program's planned shape) →
``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])`` → ``to_executorch()``. XNNPACK runs FP32, FP16
and the PT2E INT8 pattern (quantize / dequantize around float operators, fused into int8 kernels) on x86-64 and
arm64; whatever it does not take stays on ExecuTorch's portable CPU operators, and the manifest records how much
that is (``executorch.delegation``).

Loading: ``executorch.runtime.Runtime.get().load_program(path).load_method("forward")``. The runtime imports
torch. Its native code logs CPU probing to file descriptor 2 on first use; that is hidden unless ``-v``.

Measured here (2-core Xeon, busy shared machine): a SmallCNN ``.pte`` builds in about 15–20 s; MobileNetV2 224
in 25–35 s with a static batch and up to about 2 minutes with the dynamic batch axis on a loaded machine.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from edge_opt import progress, quiet
from edge_opt.errors import ExportError, QuantizeError
from edge_opt.formats.base import PT2E, Built, Format
from edge_opt.formats.evaluation import Runner, TorchRunner, predict
from edge_opt.options import Precision
from edge_opt.quant.fx import to_fp16
from edge_opt.quant.pt2e import export_program, pt2e_record, to_int8_pt2e

if TYPE_CHECKING:  # the export context is built above this layer; a format only reads it
    from edge_opt.export.prepare import ExportContext

DELEGATE = "XnnpackBackend"
#: Graph nodes that are plumbing, not computation: they never reach a delegate.
_PLUMBING = {"getitem", "sym_size.int", "sym_size"}


@contextlib.contextmanager
def _native_stderr_hidden() -> Iterator[None]:
    """Hide what native code writes to fd 2 (the runtime's CPU-probing log) unless warnings are shown (``-v``)."""
    if quiet.showing_all() or not hasattr(sys.stderr, "fileno"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (OSError, ValueError):  # pytest's captured stderr has no descriptor
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def export_pte(module: nn.Module, example: torch.Tensor, path: Path, *, max_batch: int) -> dict[str, Any]:
    """Lower ``module`` to a ``.pte`` at ``path`` with the XNNPACK delegate; returns the export record.

    ``module`` is an eager model (FP32 or FP16) or a PT2E-converted INT8 graph module; ``example`` is one input batch
    in the module's dtype.

    Raises:
        ExportError: torch.export or the lowering failed, with what to do.
    """
    quiet.quiet_import_loggers()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        export_program(module, example, max_batch)  # exportable, and right at batch 1 and 2 (see edge_opt.quant.pt2e)
    except QuantizeError as exc:
        raise ExportError(str(exc)) from None
    try:
        with quiet.known_warnings_silenced():
            # The program itself is planned for batch 1 (a device's use; runners run larger batches as single
            # calls): with a dynamic batch axis the runtime's memory plan disagreed with the exported bound (a
            # requested 32 came back as 15). Batch 1 also lowers faster.
            program = torch.export.export(module, (example[:1],))
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            delegation = delegation_record(edge.exported_program().graph_module)
            buffer = edge.to_executorch().buffer
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"ExecuTorch lowering failed ({type(exc).__name__}: {first}); leave executorch out of --format, "
            "or keep the failing layer in float (--keep-float)"
        ) from None
    path.write_bytes(buffer)
    return {"delegate": DELEGATE, "delegation": delegation}


def delegation_record(graph_module: torch.fx.GraphModule) -> dict[str, Any]:
    """How much of the lowered graph XNNPACK took: operators delegated and not (plumbing nodes left out)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    delegated = 0
    left: dict[str, int] = {}
    for op, row in info.delegation_by_operator.items():
        if op in _PLUMBING:
            continue
        delegated += row.delegated
        if row.non_delegated:
            left[op] = row.non_delegated
    total = delegated + sum(left.values())
    return {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "operators_delegated": delegated,
        "operators_not_delegated": sum(left.values()),
        "fraction_delegated": round(delegated / total, 4) if total else 0.0,
        "not_delegated": dict(sorted(left.items())),
    }


def executorch_version() -> str:
    from importlib.metadata import version

    return version("executorch")


class PteRunner:
    """A ``.pte`` in the ExecuTorch runtime (the agent's runner, :mod:`edge_agent.runtimes.executorch_program`): float32 NCHW
    in, float32 logits out (FP16 programs get cast inputs). Batches larger than the planned one run in slices.
    """

    def __init__(self, path: Path, *, name: str = "executorch", threads: int = 0) -> None:
        quiet.quiet_import_loggers()
        from edge_agent.runtimes.executorch_program import ExecutorchLoadError, load

        self.path = path
        self.name = name
        self.manifest_extra: dict[str, Any] = {}
        try:
            with _native_stderr_hidden():
                self._program = load(str(path), threads=threads)
        except ExecutorchLoadError as exc:
            raise ExportError(f"{path.name}: {exc}") from None
        self.max_batch = self._program.declared_shape[0]
        self.np_dtype = np.float16 if self._program.dtype == "float16" else np.float32
        self.pool_threads = self._program.threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outs = [
            self._program.call(np.ascontiguousarray(x[start : start + self.max_batch], dtype=self.np_dtype))
            for start in range(0, len(x), self.max_batch)
        ]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        # The XNNPACK pool is one per process and is sized before the first program loads, never after (resetting
        # it under a loaded program crashes or hangs the process: see edge_agent.runtimes.executorch_program). The host
        # latency runs on that pool; the manifest's executorch.threads records its size.
        yield


class _GraphRunner:
    """A PT2E graph module (it refuses ``.eval()``; it has no training-only layers left): the INT8 reference."""

    name = "torch.export"

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.from_numpy(x)).float().numpy()

    def threads(self, n: int) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def _pt2e_model(ctx: ExportContext) -> nn.Module:
    """The PT2E INT8 model of the context's model, built once per export (all formats that need it share it)."""
    if ctx.pt2e_model is None:
        q = ctx.config.quantization
        progress.status(f"PT2E INT8 quantization ({q.pt2e_quantizer}, {len(ctx.calibration)} calibration batches)")
        started = time.perf_counter()
        ctx.pt2e_model = to_int8_pt2e(
            ctx.spec.module,
            ctx.calibration,
            len(ctx.calibration),
            quantizer=q.pt2e_quantizer,
            keep_float=q.keep_float,
            max_batch=_max_batch(ctx),
        )
        ctx.pt2e_seconds = time.perf_counter() - started
    return ctx.pt2e_model


def _max_batch(ctx: ExportContext) -> int:
    return max(ctx.config.data.batch_size, *ctx.config.benchmark.batch_sizes)


def write_executorch(ctx: ExportContext, precision: Precision, path: Path) -> Built:
    """Build the ``.pte`` of ``precision`` for the pipeline (:class:`ExecutorchFormat`'s build).

    The source is the FP32 model, its half copy, or the PT2E INT8 model; the ``.pte`` must reproduce it (relation
    ``same``: the same gates as TorchScript). The runner carries the manifest's ``executorch`` record.
    """
    n = ctx.parity_n
    quant: dict[str, Any] | None = None
    if precision is Precision.INT8:
        source: nn.Module = _pt2e_model(ctx)
        reference: Runner = _GraphRunner(source)
        dtype = torch.float32
        q = ctx.config.quantization
        quant = pt2e_record(q.pt2e_quantizer, True, len(ctx.calibration), ctx.config.data.batch_size, q.keep_float)
        quant["calibration_seconds"] = round(ctx.pt2e_seconds, 3)
    elif precision is Precision.FP16:
        source = to_fp16(ctx.spec.module)
        dtype = torch.float16
        reference = TorchRunner(source, dtype=dtype)
    else:
        source, dtype, reference = ctx.spec.module, torch.float32, TorchRunner(ctx.spec.module)
    source_logits = (
        ctx.fp32_logits[:n]
        if precision is Precision.FP32
        else predict(reference, ctx.eval_split.head(n), ctx.spec.preprocessing, ctx.config.data.batch_size)
    )
    progress.status(f"lowering {precision.value} to ExecuTorch (XNNPACK)")
    started = time.perf_counter()
    record = export_pte(source, ctx.calibration[0][:1].to(dtype), path, max_batch=_max_batch(ctx))
    record = {"runtime_version": executorch_version(), **record, "build_seconds": round(time.perf_counter() - started, 3)}
    runner = PteRunner(path, threads=ctx.config.benchmark.threads)  # honoured if this is the process's first program
    record["max_batch"] = runner.max_batch  # 1: the batch the program is planned for; consumers slice by it
    record["threads"] = runner.pool_threads  # the pool the host latency ran with
    runner.manifest_extra = {"executorch": record}
    return Built(runner, source_logits, "same", quant)


class ExecutorchFormat(Format):
    """``model.pte``: a program lowered to XNNPACK; INT8 by PT2E. Not a default format (see the module's note)."""

    name: ClassVar[str] = "executorch"
    distributions: ClassVar[tuple[str, ...]] = ("torchao", "executorch")
    qat_family: ClassVar[str] = PT2E
    #: XNNPACK's kernels on this host: ExecuTorch has no semantics-only path here.
    evaluates_semantics: ClassVar[bool] = False
    color: ClassVar[str] = "tab:green"

    def build(self, ctx: ExportContext, precision: Precision, path: Path) -> Built:
        return write_executorch(ctx, precision, path)

    def load(self, path: Path, precision: Precision, *, engine: str | None = None, threads: int = 0) -> Runner:
        return PteRunner(path, threads=threads)

    def evaluation_how(self, mode: str, torch_engine: str) -> str:
        return "ExecuTorch with the XNNPACK delegate on this host (its kernels; the device's may round differently)"


EXECUTORCH = ExecutorchFormat()
