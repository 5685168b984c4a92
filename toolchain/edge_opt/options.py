"""The toolchain's vocabulary: the enumerations the config validates and every layer shares.

Kept apart from :mod:`edge_opt.config` (the schema and its loading) so that the layers below the config (the
quantizers, the format plugins) name a precision or an observer without importing the config, which itself
derives its list of formats from the format registry (:mod:`edge_opt.formats.registry`).
"""

from __future__ import annotations

import enum

#: The model file's input and output names (every format's; the manifest records them).
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class Precision(enum.StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Pt2eQuantizer(enum.StrEnum):
    """PT2E quantizers for the executorch format's INT8 (XNNPACK's, for arm64 and x86 alike)."""

    XNNPACK = "xnnpack"


class FxObserver(enum.StrEnum):
    """Activation observers for FX INT8 calibration (``default`` = the backend's own qconfig)."""

    DEFAULT = "default"
    MINMAX = "minmax"
    MOVING_AVERAGE = "moving_average"
    HISTOGRAM = "histogram"


class OrtCalibration(enum.StrEnum):
    """ONNX Runtime static-quantization calibration methods."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
