"""The toolchain's configuration: ``default.yaml`` (shipped inside the package), validated on load.

The file is read once; command-line flags override single values through :func:`with_overrides`. Validation
is strict: an unknown key, a wrong type or an unknown enum value stops with one line that names the key, the bad
value and what is allowed (:func:`format_validation_error`).
"""

from __future__ import annotations

import enum
import math
import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_opt.errors import ConfigError
from edge_opt.formats.registry import ArtifactFormat, default_formats
from edge_opt.options import FxObserver, OrtCalibration, Precision, Pt2eQuantizer

#: The configuration that ships inside the package (package data, read through importlib.resources, so an installed
#: copy reads the same file as a checkout); used when ``--config`` is not given.
DEFAULT_CONFIG_PATH: Traversable = resources.files("edge_opt") / "default.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class ModelSection(_Section):
    name: str = Field("smallcnn", description="smallcnn, a torchvision name, or package.module:factory")
    checkpoint: Path | None = Field(None, description="state_dict file; null trains SmallCNN (cached)")
    input_size: tuple[int, int] | None = Field(None, description="[height, width]; null = 28x28")
    num_classes: int | None = Field(None, ge=2, description="null = the data's classes (Fashion-MNIST: 10)")
    channels: int | None = Field(None, description="1 or 3 input channels; null = what the model takes (probed)")
    mean: list[float] | None = Field(None, description="normalisation mean, 1 value or 1 per channel; null = Fashion-MNIST's")
    std: list[float] | None = Field(None, description="normalisation std, 1 value or 1 per channel; null = Fashion-MNIST's")

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, v: int | None) -> int | None:
        if v is not None and v not in (1, 3):
            raise ValueError(f"channels {v}: the images are grey, fed as 1 channel or repeated to 3")
        return v

    @field_validator("mean", "std")
    @classmethod
    def _check_statistics(cls, v: list[float] | None, info: Any) -> list[float] | None:
        if v is None:
            return v
        if len(v) not in (1, 3):
            raise ValueError(f"{info.field_name} needs 1 value or 1 per channel (3), got {len(v)}")
        if not all(math.isfinite(x) for x in v) or (info.field_name == "std" and min(v) <= 0):
            raise ValueError(f"{info.field_name} {v}: values must be finite" + (" and > 0" if info.field_name == "std" else ""))
        return v

    @field_validator("input_size")
    @classmethod
    def _check_size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not all(16 <= s <= 1024 for s in v):
            raise ValueError(f"input_size {list(v)} out of range: each side must be 16..1024")
        return v


class DataSection(_Section):
    #: The user's data: an image folder, an .npz or package.module:function; null = Fashion-MNIST (built in).
    source: str | None = Field(None, min_length=1)
    #: Calibration / training data of its own (else drawn from ``source``).
    calibration: str | None = Field(None, min_length=1)
    #: Evaluation data of its own (else drawn from ``source``).
    eval: str | None = Field(None, min_length=1)
    #: Fraction of a single source held out for evaluation (a folder with train/ and val/ uses those).
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    #: Resize before the center crop to model.input_size: [N] sets the shorter side, [H, W] both; null = no crop.
    resize: tuple[int] | tuple[int, int] | None = None
    root: Path | None = Field(None, description="folder holding FashionMNIST/raw; null = $EDGE_OPT_DATA_DIR")
    download: bool = True
    batch_size: int = Field(64, ge=1, le=4096)
    eval_samples: int | None = Field(None, ge=10, description="evaluation items used; null = all")

    @field_validator("resize")
    @classmethod
    def _check_resize(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and not all(16 <= s <= 4096 for s in v):
            raise ValueError(f"resize {list(v)} out of range: each side must be 16..4096")
        return v

    @property
    def user_data(self) -> bool:
        return any(v is not None for v in (self.source, self.calibration, self.eval))


class TrainSection(_Section):
    epochs: int = Field(6, ge=0, le=200)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(128, ge=1, le=4096)
    seed: int = 0


class QatMode(enum.StrEnum):
    """When quantization-aware training runs (:mod:`edge_opt.quant.qat`)."""

    OFF = "off"
    ALWAYS = "always"  # PTQ and QAT for every INT8 artifact; the better one on the evaluation split is written
    ON_NEED = "on-need"  # PTQ first; QAT only for the artifacts whose drop exceeds max_accuracy_drop


class QatSection(_Section):
    """Quantization-aware training: fine-tuning with fake quantization on the training split (labels needed)."""

    mode: QatMode = QatMode.OFF
    epochs: int = Field(2, ge=1, le=50)
    learning_rate: float = Field(1e-4, gt=0, le=0.01)
    #: Fractions of the training after which BatchNorm statistics, then observers (scales, zero points), stop moving.
    freeze_batchnorm_after: float = Field(0.5, ge=0.0, le=1.0)
    freeze_observers_after: float = Field(0.75, ge=0.0, le=1.0)
    #: The accuracy budget below FP32, in points (--max-accuracy-drop; the pick's budget too).
    max_accuracy_drop: float = Field(0.5, ge=0.0, le=100.0)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_booleans(cls, v: Any) -> Any:
        """YAML reads a bare ``off`` / ``on`` as a boolean: take it as meant."""
        return {False: "off", True: "always"}.get(v, v) if isinstance(v, bool) else v


class QuantizationSection(_Section):
    fx_observer: FxObserver = FxObserver.DEFAULT
    ort_calibration: OrtCalibration = OrtCalibration.MINMAX
    #: Module names kept in float: FX qconfig None, and the ONNX nodes exported from them are not quantized.
    keep_float: tuple[str, ...] = ()
    #: Exact ONNX node names excluded from ONNX Runtime quantization (as the sensitivity report lists them).
    keep_float_nodes: tuple[str, ...] = ()
    #: INT8 of the executorch format: PT2E (torch.export → prepare_pt2e → calibrate → convert_pt2e) with this quantizer.
    pt2e_quantizer: Pt2eQuantizer = Pt2eQuantizer.XNNPACK
    qat: QatSection = QatSection()


class ExportSection(_Section):
    opset: int = Field(17, ge=13, le=21)
    parity_samples: int = Field(1000, ge=32, le=10000)
    #: Test images (with the host's outputs) written beside the artifacts for device-side evaluation; 0: none.
    device_eval_samples: int = Field(1000, ge=0, le=10000)


class PruneMethod(enum.StrEnum):
    STRUCTURED = "structured"
    UNSTRUCTURED = "unstructured"


class PruningSection(_Section):
    amount: float = Field(0.0, ge=0.0, lt=1.0)
    method: PruneMethod = PruneMethod.STRUCTURED
    fine_tune_epochs: int = Field(2, ge=0, le=100)
    fine_tune_learning_rate: float = Field(5e-4, gt=0, le=1)
    amounts: tuple[float, ...] = (0.0, 0.5)


class BenchmarkSection(_Section):
    threads: int = Field(1, ge=1, le=256)
    warmup_runs: int = Field(10, ge=0, le=100000)
    warmup_min_seconds: float = Field(0.1, ge=0.0, le=600)
    iterations: int = Field(30, ge=1, le=1000000)
    min_seconds: float = Field(0.3, ge=0.0, le=3600)
    batch_sizes: tuple[int, ...] = (1, 32)


class Config(_Section):
    """The whole configuration. Every section has defaults, so an empty file is valid."""

    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.FP16, Precision.INT8)
    formats: tuple[ArtifactFormat, ...] = tuple(ArtifactFormat(name) for name in default_formats())
    calibration_batches: int = Field(8, ge=1, le=10000)
    target: str = Field("host", description="host, x86_64, x86_64-avx2 or arm64")
    quantization: QuantizationSection = QuantizationSection()
    export: ExportSection = ExportSection()
    pruning: PruningSection = PruningSection()
    benchmark: BenchmarkSection = BenchmarkSection()

    @field_validator("precisions", "formats")
    @classmethod
    def _not_empty(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        if not v:
            raise ValueError("must name at least one value")
        return tuple(dict.fromkeys(v))  # de-duplicate, keep order


def _allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names allowed at ``loc`` (the parent of an unknown key)."""
    current: type[BaseModel] = model
    for part in loc:
        field = current.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return sorted(current.model_fields)


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line naming the first bad key, its value and what is allowed."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "<top level>"
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(Config, loc[:-1]))
        return f"{source}: unknown key '{key}'; allowed keys here: {allowed}"
    value = first.get("input")
    msg = first["msg"]
    if first["type"] == "enum":
        expected = first.get("ctx", {}).get("expected", "")
        msg = f"unknown value; expected one of {expected}"
    return f"{source}: invalid value {value!r} for '{key}': {msg}"


def load_config(path: Path | Traversable | None = None) -> Config:
    """Read and validate a YAML config file (the shipped default when ``path`` is None).

    Raises:
        ConfigError: the file is missing, is not YAML, or does not validate.
    """
    if path is None:
        path = DEFAULT_CONFIG_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}; pass --config FILE") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path} is not valid YAML{where}; fix the syntax") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values, not {type(raw).__name__}")
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return a validated copy of ``config`` with dotted keys (``"model.name"``) replaced.

    Raises:
        ConfigError: an override is invalid; the message names the flag's key.
    """
    data = config.model_dump(mode="python")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return parse_config(data, source="command line")


def resolve_data_root(config: Config) -> Path:
    """The dataset folder: config ``data.root``, else ``$EDGE_OPT_DATA_DIR``, else the user cache."""
    if config.data.root is not None:
        return config.data.root.expanduser()
    env = os.environ.get("EDGE_OPT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "datasets"


def cache_dir() -> Path:
    """Where trained checkpoints and downloads are cached (``$EDGE_OPT_CACHE_DIR`` overrides)."""
    env = os.environ.get("EDGE_OPT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "edge-opt"
