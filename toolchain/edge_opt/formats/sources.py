"""The PyTorch model each precision's artifact starts from, shared by the formats that trace or export it.

FP32 is the prepared model, FP16 its half-precision copy (``to_fp16``), INT8 the FX graph-mode quantization of it
(``to_int8``), built once per export and kept on the export context so that every format starting from it shares
it. The executorch format starts from PT2E instead (:mod:`edge_opt.formats.executorch`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edge_opt import progress
from edge_opt.formats.evaluation import TorchRunner, predict
from edge_opt.options import Precision
from edge_opt.quant.fx import to_fp16, to_int8

if TYPE_CHECKING:  # the export context is built above this layer; a format only reads it
    from edge_opt.export.prepare import ExportContext


def source_model(ctx: ExportContext, precision: Precision) -> torch.nn.Module:
    """The PyTorch model an artifact of this precision is exported from (FX INT8 is built once per export)."""
    if precision is Precision.FP16:
        return to_fp16(ctx.spec.module)
    if precision is Precision.INT8:
        if ctx.int8_model is None:
            progress.status(f"FX INT8 quantization ({ctx.profile.torch_engine}, {len(ctx.calibration)} calibration batches)")
            started = time.perf_counter()
            ctx.int8_model = to_int8(
                ctx.spec.module,
                ctx.calibration,
                calibration_batches=len(ctx.calibration),
                backend=ctx.profile.torch_engine,
                observer=ctx.config.quantization.fx_observer,
                keep_float=ctx.config.quantization.keep_float,
            )
            ctx.int8_seconds = time.perf_counter() - started
        return ctx.int8_model
    return ctx.spec.module


def dtype_of(precision: Precision) -> torch.dtype:
    return torch.float16 if precision is Precision.FP16 else torch.float32


def engine_of(ctx: ExportContext, precision: Precision) -> str | None:
    """The quantized engine an artifact of ``precision`` runs on (INT8 only)."""
    return ctx.profile.torch_engine if precision is Precision.INT8 else None


def source_logits(ctx: ExportContext, precision: Precision, source: torch.nn.Module) -> np.ndarray:
    """The source model's logits on the parity images (FP32: the reference logits already computed)."""
    n = ctx.parity_n
    if precision is Precision.FP32:
        return ctx.fp32_logits[:n]
    runner = TorchRunner(source, dtype=dtype_of(precision), engine=engine_of(ctx, precision))
    return predict(runner, ctx.eval_split.head(n), ctx.spec.preprocessing, ctx.config.data.batch_size)


def fx_int8_record(ctx: ExportContext) -> dict[str, Any]:
    """The manifest's quantization record of an FX INT8 artifact."""
    return {
        "engine": "torch.ao.quantization FX (prepare_fx / convert_fx)",
        "backend": ctx.profile.torch_engine,
        "observer": ctx.config.quantization.fx_observer.value,
        "per_channel": ctx.profile.torch_engine in ("x86", "fbgemm"),
        "calibration_batches": len(ctx.calibration),
        "calibration_batch_size": ctx.config.data.batch_size,
        "modules_kept_float": list(ctx.config.quantization.keep_float),
        "calibration_seconds": round(ctx.int8_seconds, 3),
    }
