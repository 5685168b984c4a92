"""The ``torchscript`` format: ``torch.jit.trace`` + ``freeze`` of the precision's source model (FX INT8 for INT8),
run back by torch on the target's quantized engine.

Freezing folds BatchNorm into convolutions; in FP16 that folding rounds the folded weights a second time and moved
MobileNetV2's logits by 6% here, so half-precision modules are frozen without numeric rewrites. For INT8, the
semantics are the quantized engine's integer kernels (``torch.backends.quantized.engine``): an x86 torch build has
every engine, so an artifact built for ``qnnpack`` (arm64) runs on the host with ``qnnpack``, as on the device.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from edge_opt.errors import ExportError, first_line
from edge_opt.formats import sources
from edge_opt.formats.base import FX, Built, Format
from edge_opt.formats.evaluation import Runner, TorchRunner
from edge_opt.options import Precision
from edge_opt.quant.fx import quantized_engine
from edge_opt.quiet import known_warnings_silenced

if TYPE_CHECKING:  # the export context is built above this layer; a format only reads it
    from edge_opt.export.prepare import ExportContext




def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, *, engine: str | None = None) -> None:
    """Trace ``module`` on ``example``, freeze it and save it; ``engine`` for INT8 modules."""
    optimize_numerics = example.dtype != torch.float16
    engine_ctx = quantized_engine(engine) if engine else contextlib.nullcontext()
    try:
        with engine_ctx, known_warnings_silenced(), torch.no_grad():
            traced = torch.jit.trace(module.eval(), (example,), check_trace=False)
            frozen = torch.jit.freeze(traced, optimize_numerics=optimize_numerics)
            torch.jit.save(frozen, str(path))
    except Exception as exc:
        raise ExportError(
            f"TorchScript export failed ({type(exc).__name__}: {first_line(exc)}); the model must be traceable "
            "(no data-dependent Python control flow), or export --format onnx only"
        ) from None


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with known_warnings_silenced():
        return torch.jit.load(str(path), map_location="cpu").eval()


class TorchScriptFormat(Format):
    """``model.pt``: traced and frozen TorchScript; INT8 by FX graph-mode quantization."""

    name: ClassVar[str] = "torchscript"
    default: ClassVar[bool] = True
    qat_family: ClassVar[str] = FX
    color: ClassVar[str] = "tab:orange"

    def build(self, ctx: ExportContext, precision: Precision, path: Path) -> Built:
        source = sources.source_model(ctx, precision)
        logits = sources.source_logits(ctx, precision, source)
        engine = sources.engine_of(ctx, precision)
        export_torchscript(source, ctx.calibration[0][:1].to(sources.dtype_of(precision)), path, engine=engine)
        runner = self.load(path, precision, engine=engine)
        return Built(runner, logits, "same", sources.fx_int8_record(ctx) if precision is Precision.INT8 else None)

    def load(self, path: Path, precision: Precision, *, engine: str | None = None, threads: int = 0) -> Runner:
        return TorchRunner(load_torchscript(path), dtype=sources.dtype_of(precision), engine=engine)


TORCHSCRIPT = TorchScriptFormat()
