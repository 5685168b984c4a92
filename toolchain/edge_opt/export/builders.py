"""One builder per artifact format: each writes one model file for a precision and says how to check it.

A builder gets the export's :class:`~edge_opt.export.prepare.ExportContext`, the precision and the staged path, and
returns a :class:`Built`: the runner that loads the file back with its own runtime, the logits of the model it
must reproduce (the parity gate's reference), the relation (``same``: the same computation; ``quantized``: a
quantization of the FP32 model) and the quantization record for the manifest. The pipeline validates, evaluates,
times and publishes whatever a builder made.

A new format takes: its model file and runtime in ``edge_agent.formats`` (shared with the agent), a value of
:class:`edge_opt.config.ArtifactFormat`, a builder here with its :data:`FORMATS` entry, and a runner in the agent's
worker. Only one step is format-specific outside these: evaluating an INT8 artifact built for another CPU by the
model's semantics (graph optimisations off) exists for ONNX (``pipeline._build``, ``manifest_builder``); other formats
are evaluated with their runtime's kernels on this host, which the manifest's ``host_metrics.evaluation`` says.

Source models per precision: FP32 is the prepared model, FP16 ``to_fp16``, INT8 FX graph-mode quantization
(``to_int8``, built once per export and shared by the formats that start from it). INT8 ONNX is ONNX Runtime's
static quantization of the FP32 ONNX graph (:mod:`edge_opt.quant.ort`) with the same calibration batches.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_agent.formats import MODEL_FORMATS, ModelFormat

from edge_opt import progress
from edge_opt.config import ArtifactFormat, Precision
from edge_opt.export.prepare import ExportContext
from edge_opt.formats.evaluation import OrtRunner, Runner, TorchRunner, predict
from edge_opt.formats.writers import export_onnx, export_torchscript, load_torchscript
from edge_opt.quant.fx import check_keep_float, to_fp16, to_int8
from edge_opt.quant.ort import quantize_onnx
from edge_opt.quant.sensitivity import onnx_nodes_for_modules


@dataclass
class Built:
    """A model file written by a builder, and what it must be checked against."""

    runner: Runner
    source_logits: np.ndarray
    relation: str  # "same" | "quantized"
    quantization: dict[str, Any] | None = None


Builder = Callable[[ExportContext, Precision, Path], Built]


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


def _dtype(precision: Precision) -> torch.dtype:
    return torch.float16 if precision is Precision.FP16 else torch.float32


def _engine(ctx: ExportContext, precision: Precision) -> str | None:
    return ctx.profile.torch_engine if precision is Precision.INT8 else None


def _source_logits(ctx: ExportContext, precision: Precision, source: torch.nn.Module) -> np.ndarray:
    """The source model's logits on the parity images (FP32: the reference logits already computed)."""
    n = ctx.parity_n
    if precision is Precision.FP32:
        return ctx.fp32_logits[:n]
    runner = TorchRunner(source, dtype=_dtype(precision), engine=_engine(ctx, precision))
    return predict(runner, ctx.eval_split.head(n), ctx.spec.preprocessing, ctx.config.data.batch_size)


def _fx_int8_record(ctx: ExportContext) -> dict[str, Any]:
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


def fp32_onnx(ctx: ExportContext) -> Path:
    """The FP32 ONNX graph, exported once per export: the FP32 artifact and the input of ONNX Runtime INT8."""
    path = ctx.work / "fp32.onnx"
    if not path.exists():
        export_onnx(ctx.spec.module, ctx.calibration[0][:1], path, opset=ctx.config.export.opset)
    return path


def build_torchscript(ctx: ExportContext, precision: Precision, path: Path) -> Built:
    """``torch.jit.trace`` + ``freeze`` of the precision's source model (FX INT8 for INT8)."""
    source = source_model(ctx, precision)
    logits = _source_logits(ctx, precision, source)
    engine = _engine(ctx, precision)
    export_torchscript(source, ctx.calibration[0][:1].to(_dtype(precision)), path, engine=engine)
    runner = TorchRunner(load_torchscript(path), dtype=_dtype(precision), engine=engine)
    return Built(runner, logits, "same", _fx_int8_record(ctx) if precision is Precision.INT8 else None)


def build_onnx(ctx: ExportContext, precision: Precision, path: Path) -> Built:
    """FP32 / FP16: the exported graph. INT8: ONNX Runtime static quantization of the FP32 graph, checked against
    the FP32 model (a quantization of it, not the same computation)."""
    if precision is Precision.INT8:
        return _build_onnx_int8(ctx, path)
    source = source_model(ctx, precision)
    logits = _source_logits(ctx, precision, source)
    if precision is Precision.FP32:
        shutil.copyfile(fp32_onnx(ctx), path)  # the same graph INT8 ONNX quantizes: export it once
    else:
        export_onnx(source, ctx.calibration[0][:1].to(_dtype(precision)), path, opset=ctx.config.export.opset)
    return Built(OrtRunner(path), logits, "same")


def _build_onnx_int8(ctx: ExportContext, path: Path) -> Built:
    q = ctx.config.quantization
    check_keep_float(ctx.spec.module, q.keep_float)
    graph = fp32_onnx(ctx)
    excluded = list(dict.fromkeys([*onnx_nodes_for_modules(graph, q.keep_float), *q.keep_float_nodes]))
    started = time.perf_counter()
    record = quantize_onnx(
        graph, path, [x.numpy() for x in ctx.calibration], ctx.profile, method=q.ort_calibration, keep_float=excluded
    )
    record["calibration_seconds"] = round(time.perf_counter() - started, 3)
    record["calibration_batch_size"] = ctx.config.data.batch_size
    return Built(OrtRunner(path), ctx.fp32_logits[: ctx.parity_n], "quantized", record)


@dataclass(frozen=True)
class FormatSpec:
    """An artifact format as the toolchain builds it: its builder, and (shared with the agent) its file and runtime."""

    builder: Builder
    model: ModelFormat

    @property
    def suffix(self) -> str:
        return self.model.suffix

    @property
    def runtime(self) -> str:
        return self.model.runtime


def build_executorch(ctx: ExportContext, precision: Precision, path: Path) -> Built:
    """A ``.pte`` with the XNNPACK delegate (:mod:`edge_opt.formats.executorch`; INT8 by PT2E, not FX)."""
    from edge_opt.formats.executorch import write_executorch  # executorch is imported only for this format

    return write_executorch(ctx, precision, path)


FORMATS: dict[ArtifactFormat, FormatSpec] = {
    ArtifactFormat.TORCHSCRIPT: FormatSpec(build_torchscript, MODEL_FORMATS["torchscript"]),
    ArtifactFormat.ONNX: FormatSpec(build_onnx, MODEL_FORMATS["onnx"]),
    ArtifactFormat.EXECUTORCH: FormatSpec(build_executorch, MODEL_FORMATS["executorch"]),
}
