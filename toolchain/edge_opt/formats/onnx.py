"""The ``onnx`` format: the model exported to ONNX, run back by ONNX Runtime's CPU session.

FP32 / FP16 are the exported graph (FP16 from the half-precision model, so its inputs and outputs are float16).
INT8 is ONNX Runtime's static quantization (QDQ) of the FP32 graph (:mod:`edge_opt.quant.ort`) with the same
calibration batches, checked against the FP32 model (a quantization of it, not the same computation). The export
uses the TorchScript-based exporter (``dynamo=False``): 0.6 s against about 10 s for the dynamo exporter on
MobileNetV2, and the dynamo exporter cannot export FX INT8 modules at all.

INT8 built for another CPU is evaluated by the model's semantics: ONNX Runtime with graph optimisations disabled,
QuantizeLinear / DequantizeLinear executed as written (:mod:`edge_opt.formats.evaluation`).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from edge_agent.runtimes.onnx_session import input_spec, open_session
from torch import nn

from edge_opt.errors import ExportError, first_line
from edge_opt.formats import sources
from edge_opt.formats.base import FX, Built, Format
from edge_opt.formats.evaluation import Runner, TorchRunner, predict
from edge_opt.options import INPUT_NAME, OUTPUT_NAME, Precision
from edge_opt.quant.fx import check_keep_float, quantized_engine
from edge_opt.quant.ort import quantize_onnx
from edge_opt.quant.sensitivity import onnx_nodes_for_modules
from edge_opt.quiet import known_warnings_silenced

if TYPE_CHECKING:  # the export context is built above this layer; a format only reads it
    from edge_opt.export.prepare import ExportContext


class OrtRunner:
    """An ONNX Runtime CPU session; the input is cast to the dtype the model declares."""

    def __init__(self, path: Path, *, threads: int = 0, name: str = "onnxruntime", semantics: bool = False) -> None:
        self.path = path
        self.name = name
        #: True: graph optimisations disabled, so QDQ models execute their quantize / dequantize as written.
        self.semantics = semantics
        self._sessions: dict[int, Any] = {}
        self._session = self._make(threads)
        self.input_name, _, dtype = input_spec(self._session)
        self.input_dtype = np.dtype(dtype)

    def _make(self, threads: int) -> Any:
        if threads not in self._sessions:
            optimization = "disable" if self.semantics else "all"
            self._sessions[threads] = open_session(str(self.path), threads=threads, optimization=optimization)
        return self._sessions[threads]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {self.input_name: x.astype(self.input_dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32)

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        previous = self._session
        self._session = self._make(n)
        try:
            yield
        finally:
            self._session = previous


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, *, opset: int) -> None:
    """Export with a dynamic batch axis; input ``input`` (NCHW), output ``logits``."""
    try:
        with known_warnings_silenced(), torch.no_grad():
            torch.onnx.export(
                module.eval(),
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed ({type(exc).__name__}: {first_line(exc)}); try another export.opset in the config, "
            "or --format torchscript only"
        ) from None


def fp32_onnx(ctx: ExportContext) -> Path:
    """The FP32 ONNX graph, exported once per export: the FP32 artifact and the input of ONNX Runtime INT8."""
    path = ctx.work / "fp32.onnx"
    if not path.exists():
        export_onnx(ctx.spec.module, ctx.calibration[0][:1], path, opset=ctx.config.export.opset)
    return path


class OnnxFormat(Format):
    """``model.onnx``: the exported graph; INT8 by ONNX Runtime static quantization (QDQ)."""

    name: ClassVar[str] = "onnx"
    default: ClassVar[bool] = True
    distributions: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")
    qat_family: ClassVar[str] = FX
    color: ClassVar[str] = "tab:blue"

    def build(self, ctx: ExportContext, precision: Precision, path: Path) -> Built:
        """FP32 / FP16: the exported graph. INT8: ONNX Runtime static quantization of the FP32 graph."""
        if precision is Precision.INT8:
            return self._build_int8(ctx, path)
        source = sources.source_model(ctx, precision)
        logits = sources.source_logits(ctx, precision, source)
        if precision is Precision.FP32:
            shutil.copyfile(fp32_onnx(ctx), path)  # the same graph INT8 ONNX quantizes: export it once
        else:
            export_onnx(source, ctx.calibration[0][:1].to(sources.dtype_of(precision)), path, opset=ctx.config.export.opset)
        return Built(self.load(path, precision), logits, "same")

    def _build_int8(self, ctx: ExportContext, path: Path) -> Built:
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
        return Built(self.load(path, Precision.INT8), ctx.fp32_logits[: ctx.parity_n], "quantized", record)

    def load(self, path: Path, precision: Precision, *, engine: str | None = None, threads: int = 0) -> Runner:
        return OrtRunner(path, threads=threads)

    def semantics_runner(self, path: Path) -> Runner | None:
        return OrtRunner(path, semantics=True)

    def semantics_how(self, torch_engine: str) -> str:
        return "onnxruntime with graph optimisations disabled: QuantizeLinear / DequantizeLinear executed as written"

    def build_qat(self, ctx: ExportContext, model: nn.Module, record: dict[str, Any], path: Path) -> Built:
        """QDQ ONNX of the FX QAT model: its own scales and zero points, exported, not recalibrated."""
        engine = ctx.profile.torch_engine
        with quantized_engine(engine):
            export_onnx(model, ctx.calibration[0][:1], path, opset=ctx.config.export.opset)
        runner = TorchRunner(model, engine=engine)
        logits = predict(runner, ctx.eval_split.head(ctx.parity_n), ctx.spec.preprocessing, ctx.config.data.batch_size)
        quant = {
            **record,
            "engine": record["engine"] + " → ONNX (TorchScript-based exporter): QDQ with the QAT model's scales and zero points",
            "quant_format": "QDQ",
            "activation_type": "QUInt8",
            "weight_type": "QInt8",
            "recalibrated_by_onnxruntime": False,
        }
        # The same computation as the FX QAT model (its INT8 TorchScript twin): held to the INT8 "same" gate.
        return Built(OrtRunner(path), logits, "same", quant)

    def reloaded(self, built: Built, path: Path) -> Runner:
        return OrtRunner(path)  # load the published copy (the same bytes)


ONNX = OnnxFormat()
