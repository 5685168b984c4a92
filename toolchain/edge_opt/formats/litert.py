"""The ``litert`` format: a LiteRT model (``.tflite``) converted by litert-torch, run by ai-edge-litert's interpreter.

* FP32: ``litert_torch.convert(model, (sample,))`` of the FP32 model, once per export (FP16 and INT8 start from it).
  The input stays NCHW as in torch (the converter transposes inside the graph) and the batch is fixed at 1, the
  sample's (litert-torch cannot export a symbolic batch through ``torch.flatten``). Larger batches run as a resized
  interpreter when the model takes it, else in batch-1 slices (:mod:`edge_agent.runtimes.litert`).
* FP16: ai-edge-quantizer's ``float_casting`` weight-only recipe on the FP32 file: float16 weight buffers with
  DEQUANTIZE operators, float32 activations, inputs and outputs; XNNPACK runs it on CPU. Held to the FP16 gates
  against the FP32 model.
* INT8: full-integer static quantization by ai-edge-quantizer (``static_wi8_ai8``: int8 weights per channel, int8
  activations) calibrated in the LiteRT interpreter on the same calibration batches as the other formats, fed one
  image at a time (the file's batch). Its input and output are int8: the runner quantizes the float batch with the
  input's scale and zero point and dequantizes the output (the code the device runs); the manifest records both.
  Held to the INT8 gates of a quantization of the FP32 model. Named modules cannot be kept in float here (the
  quantizer selects operators by their output tensors' names, which do not carry torch's module names): an INT8
  litert artifact with ``--keep-float`` is refused with that reason.

Loading: :class:`edge_agent.runtimes.litert.LiteRTModel`, the device's runner, with XNNPACK (the interpreter's
default on CPU). litert-torch and ai-edge-quantizer come with the ``litert`` extra; without it the format is refused
with the install line. The artifacts' INT8 accuracy is XNNPACK's on this host (no semantics-only path).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edge_opt import progress, quiet
from edge_opt.errors import ExportError, first_line
from edge_opt.formats.base import Built, Format
from edge_opt.formats.evaluation import Runner
from edge_opt.options import Precision

if TYPE_CHECKING:  # the export context is built above this layer; a format only reads it
    from torch import nn

    from edge_opt.export.prepare import ExportContext

INSTALL = "pip install 'edge-opt[litert]'"
#: The quantizer's recipe of the INT8 artifact.
INT8_RECIPE = "static_wi8_ai8"


@contextlib.contextmanager
def _converter_output_hidden() -> Iterator[None]:
    """Hide what the converter and the quantizer print (progress lines on stdout, the delegate's log on fd 2): the
    CLI's stdout is its ``--json`` result. Shown with ``-v``."""
    if quiet.showing_all():
        yield
        return
    from edge_opt.formats.executorch import _native_stderr_hidden

    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        _native_stderr_hidden(),
        quiet.known_warnings_silenced(),
    ):
        yield


def _delegate_log_hidden() -> contextlib.AbstractContextManager[None]:
    """Hide the interpreter's "Created ... XNNPACK delegate" line on fd 2 (unless ``-v``)."""
    from edge_opt.formats.executorch import _native_stderr_hidden

    return _native_stderr_hidden()


def _require(module: str) -> None:
    """Import ``module`` of the litert extra, or refuse the format with the install line."""
    import importlib

    try:
        quiet.quiet_import_loggers()
        with quiet.known_warnings_silenced():
            importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"the litert format needs litert-torch and ai-edge-quantizer ({exc}): {INSTALL}") from None


class LiteRTRunner:
    """A ``.tflite`` in the LiteRT interpreter (XNNPACK), as the device runs it: float32 NCHW in, float32 logits out."""

    def __init__(self, path: Path, *, threads: int = 0, name: str = "ai-edge-litert") -> None:
        from edge_agent.runtimes.litert import LiteRTLoadError, load

        self.path = path
        self.name = name
        self.manifest_extra: dict[str, Any] = {}
        self._threads = threads
        try:
            with _delegate_log_hidden():
                self._models = {threads: load(str(path), threads=threads)}
        except (LiteRTLoadError, OSError) as exc:
            raise ExportError(f"{path.name}: {exc}") from None
        self._model = self._models[threads]

    @property
    def model(self) -> Any:
        return self._model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.runner_for(len(x))(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float32)

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        from edge_agent.runtimes.litert import load

        previous = self._model
        if n not in self._models:
            with _delegate_log_hidden():
                self._models[n] = load(str(self.path), threads=n)
        self._model = self._models[n]
        try:
            yield
        finally:
            self._model = previous


def convert_fp32(module: nn.Module, example: Any, path: Path) -> float:
    """Convert ``module`` for an input like ``example`` (batch 1) to a ``.tflite`` at ``path``; returns the seconds.

    Raises:
        ExportError: litert-torch cannot convert the model (the reason named).
    """
    _require("litert_torch")
    import litert_torch
    import torch

    started = time.perf_counter()
    try:
        with _converter_output_hidden(), torch.no_grad():
            litert_torch.convert(module.eval(), (example[:1].contiguous(),)).export(str(path))
    except Exception as exc:
        raise ExportError(
            f"litert-torch cannot convert this model ({type(exc).__name__}: {first_line(exc)}); "
            "leave litert out of --format"
        ) from None
    return time.perf_counter() - started


def fp32_tflite(ctx: ExportContext) -> Path:
    """The FP32 ``.tflite``, converted once per export: the FP32 artifact and the input of FP16 and INT8."""
    path = ctx.work / "fp32.tflite"
    if not path.exists():
        progress.status("converting FP32 to LiteRT (litert-torch)")
        convert_fp32(ctx.spec.module, ctx.calibration[0][:1], path)
    return path


def _signature(path: Path) -> tuple[str, str]:
    """The FP32 model's signature key and its one input's name (what the quantizer's calibration is keyed by)."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    key = next(iter(signatures))
    return key, signatures[key]["inputs"][0]


def _quantize(source: Path, path: Path, precision: Precision, calibration: list[np.ndarray] | None) -> None:
    """FP16 (float_casting of the weights) or INT8 (static_wi8_ai8, calibrated) of the FP32 file, written at ``path``."""
    _require("ai_edge_quantizer")
    from ai_edge_quantizer import qtyping, quantizer, recipe

    try:
        with _converter_output_hidden():
            q = quantizer.Quantizer(str(source))
            if precision is Precision.FP16:
                q.add_weight_only_config(
                    regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                    algorithm_key="float_casting",
                )  # fmt: skip
                entries = q.get_quantization_recipe()
                for entry in entries:  # float_casting takes a FLOAT weight type: the recipe's default is INT
                    entry["op_config"]["weight_tensor_config"]["dtype"] = "FLOAT"
                q.load_quantization_recipe(entries)
                result = q.quantize()
            else:
                q.load_quantization_recipe(recipe.static_wi8_ai8())
                key, name = _signature(source)
                cal = q.calibrate({key: [{name: x} for x in calibration or []]}, num_threads=1)
                result = q.quantize(cal)
            result.export_model(str(path), overwrite=True)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"ai-edge-quantizer cannot make the {precision.value} LiteRT model ({type(exc).__name__}: {first_line(exc)}); "
            f"leave {precision.value} or litert out"
        ) from None


def _calibration_images(ctx: ExportContext) -> list[np.ndarray]:
    """The export's calibration batches, one image at a time (the file's batch of 1)."""
    return [np.ascontiguousarray(b[i : i + 1].numpy(), dtype=np.float32) for b in ctx.calibration for i in range(len(b))]


def write_litert(ctx: ExportContext, precision: Precision, path: Path) -> Built:
    """Build the ``.tflite`` of ``precision`` for the pipeline (:class:`LiteRTFormat`'s build)."""
    started = time.perf_counter()
    source = fp32_tflite(ctx)
    quant: dict[str, Any] | None = None
    relation = "same"
    if precision is Precision.FP32:
        path.write_bytes(source.read_bytes())
    elif precision is Precision.FP16:
        progress.status("FP16 LiteRT: float16 weights (ai-edge-quantizer float_casting)")
        _quantize(source, path, precision, None)
    else:
        keep = list(ctx.config.quantization.keep_float)
        if keep:
            raise ExportError(
                f"the litert format cannot keep {', '.join(keep)} in float: its quantizer selects operators by output "
                "tensor names, which do not carry the model's module names; drop --keep-float or leave litert out"
            )
        images = _calibration_images(ctx)
        progress.status(f"INT8 LiteRT: {INT8_RECIPE}, calibrating on {len(images)} images in the interpreter")
        calibrating = time.perf_counter()
        _quantize(source, path, precision, images)
        relation = "quantized"
        quant = {
            "engine": f"ai-edge-quantizer {_version('ai-edge-quantizer')} ({INT8_RECIPE}): full-integer static",
            "weights": "int8, symmetric, per channel",
            "activations": "int8, per tensor",
            "calibration_batches": len(ctx.calibration),
            "calibration_batch_size": ctx.config.data.batch_size,
            "calibration_images": len(images),
            "modules_kept_float": [],
            "calibration_seconds": round(time.perf_counter() - calibrating, 3),
        }
    runner = LiteRTRunner(path, threads=ctx.config.benchmark.threads)
    record = runner.model.manifest()
    if quant is not None:
        quant["input"] = record["input_quantization"]
        quant["output"] = record["output_quantization"]
    record.update(
        converter=f"litert-torch {_version('litert-torch')}",
        max_batch=runner.model.batch,
        build_seconds=round(time.perf_counter() - started, 3),
    )
    runner.manifest_extra = {"litert": record}
    return Built(runner, ctx.fp32_logits[: ctx.parity_n], relation, quant)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return ""


class LiteRTFormat(Format):
    """``model.tflite``: converted by litert-torch; FP16 and INT8 by ai-edge-quantizer. Not a default format."""

    name: ClassVar[str] = "litert"
    distributions: ClassVar[tuple[str, ...]] = ("litert-torch", "ai-edge-quantizer", "ai-edge-litert")
    #: XNNPACK's kernels on this host: LiteRT has no semantics-only path here.
    evaluates_semantics: ClassVar[bool] = False
    color: ClassVar[str] = "tab:purple"

    def build(self, ctx: ExportContext, precision: Precision, path: Path) -> Built:
        return write_litert(ctx, precision, path)

    def load(self, path: Path, precision: Precision, *, engine: str | None = None, threads: int = 0) -> Runner:
        return LiteRTRunner(path, threads=threads)

    def evaluation_how(self, mode: str, torch_engine: str) -> str:
        return "ai-edge-litert with the XNNPACK delegate on this host (its kernels; the device's may round differently)"

    def build_qat(self, ctx: ExportContext, model: nn.Module, record: dict[str, Any], path: Path) -> Built:
        raise ExportError(
            "the litert format's INT8 is calibrated by ai-edge-quantizer on the FP32 model: it has no "
            "quantization-aware training path; use --qat off for litert, or leave litert out"
        )

    def reloaded(self, built: Built, path: Path) -> Runner:
        return LiteRTRunner(path)


LITERT = LiteRTFormat()
