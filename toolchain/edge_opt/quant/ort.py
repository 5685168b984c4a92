"""INT8 ONNX through ONNX Runtime static quantization (QDQ), with the target profile's types and the same
calibration batches as FX INT8."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from edge_opt.errors import ExportError, first_line
from edge_opt.options import INPUT_NAME, OrtCalibration
from edge_opt.quiet import known_warnings_silenced
from edge_opt.targets import TargetProfile


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
                f"ONNX Runtime quantization failed ({type(exc).__name__}: {first_line(exc)}); keep the failing node "
                "in float (quantization.keep_float_nodes) or use --format torchscript for INT8"
            ) from None
    return settings
