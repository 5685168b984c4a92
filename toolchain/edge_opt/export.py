"""Writing model files: TorchScript (traced and frozen) and ONNX (FP32, FP16, INT8 via ONNX Runtime).

Each function writes exactly one file at the path it is given; the caller (``edge_opt.artifact``) stages that path
and only publishes it after validation. Measured facts that shaped this module (torch 2.14, onnxruntime 1.32):

* ONNX uses the TorchScript-based exporter (``dynamo=False``): 0.6 s against about 10 s for the dynamo exporter on
  MobileNetV2, and the dynamo exporter cannot export FX INT8 modules at all.
* FP16 ONNX is exported from the half-precision model, so its inputs and outputs are float16.
* INT8 ONNX is ONNX Runtime's static quantization of the FP32 ONNX model, in QDQ format, per-channel, calibrated on
  the same batches as FX INT8, with the activation/weight types of the target profile.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_opt.config import OrtCalibration
from edge_opt.errors import ExportError
from edge_opt.quantization import quantized_engine
from edge_opt.quiet import known_warnings_silenced
from edge_opt.targets import TargetProfile

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, *, engine: str | None = None) -> None:
    """Trace ``module`` on ``example``, freeze it and save it; ``engine`` for INT8 modules.

    Freezing folds BatchNorm into convolutions; in FP16 that folding rounds the folded weights a second time and
    moved MobileNetV2's logits by 6% here, so half-precision modules are frozen without numeric rewrites.
    """
    optimize_numerics = example.dtype != torch.float16
    engine_ctx = quantized_engine(engine) if engine else contextlib.nullcontext()
    try:
        with engine_ctx, known_warnings_silenced(), torch.no_grad():
            traced = torch.jit.trace(module.eval(), (example,), check_trace=False)
            frozen = torch.jit.freeze(traced, optimize_numerics=optimize_numerics)
            torch.jit.save(frozen, str(path))
    except Exception as exc:
        raise ExportError(
            f"TorchScript export failed ({type(exc).__name__}: {_first_line(exc)}); the model must be traceable "
            "(no data-dependent Python control flow), or export --format onnx only"
        ) from None


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with known_warnings_silenced():
        return torch.jit.load(str(path), map_location="cpu").eval()


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
            f"ONNX export failed ({type(exc).__name__}: {_first_line(exc)}); try another export.opset in the config, "
            "or --format torchscript only"
        ) from None


class BatchReader:
    """An ONNX Runtime ``CalibrationDataReader`` over a fixed list of input batches."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str = INPUT_NAME) -> None:
        self._batches = list(batches)
        self._input_name = input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        batch = self._batches[self._next]
        self._next += 1
        return {self._input_name: batch}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (item := self.get_next()) is not None:
            yield item


def quantize_onnx(
    fp32_path: Path,
    path: Path,
    calibration_batches: Iterable[np.ndarray],
    profile: TargetProfile,
    *,
    method: OrtCalibration = OrtCalibration.MINMAX,
    keep_float: Sequence[str] = (),
) -> dict[str, object]:
    """Static INT8 quantization (QDQ) of an FP32 ONNX file with ONNX Runtime.

    Returns:
        The settings used, for the manifest.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration_batches]
    if not batches:
        raise ExportError("no calibration batches for ONNX INT8 quantization; set --calibration-batches to 1 or more")
    calibrate = {
        OrtCalibration.MINMAX: CalibrationMethod.MinMax,
        OrtCalibration.ENTROPY: CalibrationMethod.Entropy,
        OrtCalibration.PERCENTILE: CalibrationMethod.Percentile,
    }[method]
    settings: dict[str, object] = {
        "engine": "onnxruntime.quantization.quantize_static",
        "quant_format": "QDQ",
        "activation_type": profile.ort_activation_type,
        "weight_type": profile.ort_weight_type,
        "per_channel": profile.ort_per_channel,
        "reduce_range": profile.ort_reduce_range,
        "calibrate_method": calibrate.name,
        "calibration_batches": len(batches),
        "nodes_excluded": list(keep_float),
    }
    # The entropy / percentile calibrators print() their progress: keep stdout clean for --json.
    chatter = io.StringIO()
    with (
        tempfile.TemporaryDirectory(prefix="edge-opt-ortq-") as tmp,
        known_warnings_silenced(),
        contextlib.redirect_stdout(chatter),
    ):
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Shape inference and graph optimisation first, as ONNX Runtime recommends before quantizing.
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(path),
                BatchReader(batches),
                quant_format=QuantFormat.QDQ,
                per_channel=profile.ort_per_channel,
                reduce_range=profile.ort_reduce_range,
                activation_type=getattr(QuantType, profile.ort_activation_type),
                weight_type=getattr(QuantType, profile.ort_weight_type),
                calibrate_method=calibrate,
                nodes_to_exclude=list(keep_float) or None,
            )
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime quantization failed ({type(exc).__name__}: {_first_line(exc)}); keep the failing node "
                "in float (quantization.keep_float_nodes) or use --format torchscript for INT8"
            ) from None
    return settings


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no message"
