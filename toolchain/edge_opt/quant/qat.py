"""Quantization-aware training (QAT): when post-training quantization loses too much, fine-tune with fake
quantization in the loop on the training split, then convert.

Three paths, each PyTorch's own:

* FX (the TorchScript artifact): ``prepare_qat_fx`` with the target engine's QAT qconfig (``x86``: per-channel
  weights, 7-bit activations; ``qnnpack``: per-tensor) → fine-tune → ``convert_fx``.
* ONNX: the same FX QAT model exported with the TorchScript-based exporter, which writes its learned scales and
  zero points as QuantizeLinear / DequantizeLinear pairs: ONNX Runtime does not recalibrate it.
* PT2E (the executorch format): ``torch.export`` in training mode → ``prepare_qat_pt2e`` with XNNPACKQuantizer's
  QAT configuration → fine-tune → ``convert_pt2e``.

A model is trained once per path and export (the FX QAT model feeds TorchScript and ONNX). Training sees the
training split only (``ctx.data.train``), never the evaluation split, and needs labels (cross-entropy on class
scores). Adam with a cosine schedule; BatchNorm statistics are frozen after ``freeze_batchnorm_after`` of the steps
and the observers (scales, zero points) after ``freeze_observers_after``, so the last steps train the weights
against fixed quantization grids.

The choice between the PTQ and the QAT artifact in an export is :mod:`edge_opt.export.qat_choice`'s.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edge_opt import progress
from edge_opt.config import Config, QatMode, QatSection
from edge_opt.data import Preprocessing, Split
from edge_opt.errors import ConfigError, DataError, ExportError, first_line
from edge_opt.options import Precision
from edge_opt.quant.fx import check_keep_float, quantized_engine
from edge_opt.quant.pt2e import quantizer_for
from edge_opt.quiet import known_warnings_silenced, quiet_import_loggers

#: The QAT model families: a format plugin names the one its INT8 artifact is built from (``Format.qat_family``).
FX, PT2E = "fx", "pt2e"


def requested(config: Config) -> bool:
    return config.quantization.qat.mode is not QatMode.OFF and Precision.INT8 in config.precisions


def check_request(config: Config, train: Split, classifier: bool, random_init: bool) -> None:
    """QAT fine-tunes trained weights on labelled class scores: refuse anything else before any work (exit 3 for the
    data, 2 for random weights), naming the fix."""
    if not requested(config):
        return
    if random_init:
        raise ConfigError(
            f"--qat fine-tunes trained weights, and {config.model.name} has random weights here (no --checkpoint): "
            "give --checkpoint with its trained state_dict, or drop --qat"
        )
    if train.labels is None:
        raise DataError(
            "--qat fine-tunes on labelled training data, and this data has no labels: give labelled data (an image "
            "folder with class subfolders, an .npz with y, a factory returning (input, label)), or drop --qat"
        )
    if not classifier:
        raise DataError(
            "--qat trains with cross-entropy on class scores, and this model's output is not one row of class "
            "scores per item: drop --qat for it (keep layers in float with --keep-float instead)"
        )
    if len(train) == 0:
        raise DataError("--qat needs training items, and the training split is empty")


# --------------------------------------------------------------------------------------------------- training


@dataclass
class Training:
    """What a QAT fine-tune did (for the manifest and the table)."""

    epochs: int
    steps: int
    items: int
    seconds: float
    freeze_batchnorm_step: int
    freeze_observers_step: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "steps": self.steps,
            "train_items": self.items,
            "train_seconds": round(self.seconds, 2),
            "seconds_per_epoch": round(self.seconds / max(1, self.epochs), 2),
            "freeze_batchnorm_after_step": self.freeze_batchnorm_step,
            "freeze_observers_after_step": self.freeze_observers_step,
        }


def fine_tune(
    module: nn.Module,
    train: Split,
    preprocessing: Preprocessing,
    settings: QatSection,
    *,
    batch_size: int,
    seed: int,
    freeze_batchnorm: Callable[[nn.Module], object] = lambda m: None,
    freeze_observers: Callable[[nn.Module], object] = lambda m: None,
    label: str = "QAT",
) -> Training:
    """Train ``module`` (already in training mode) on ``train`` with Adam, cross-entropy and a cosine schedule.

    The same loop fine-tunes a float model when the hooks do nothing (what the benchmark compares QAT's cost with).
    """
    if train.labels is None:
        raise DataError("QAT needs labelled training data")
    torch.manual_seed(seed)
    steps_per_epoch = -(-len(train) // batch_size)
    total = max(1, settings.epochs * steps_per_epoch)
    freeze_bn_at = math.floor(settings.freeze_batchnorm_after * total)
    freeze_obs_at = math.floor(settings.freeze_observers_after * total)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    bn_frozen = obs_frozen = False
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        batches = train.batches(preprocessing, batch_size, shuffle=True, seed=seed + 7919 + epoch)
        for x, y in progress.track(batches, f"{label} epoch {epoch + 1}/{settings.epochs}", steps_per_epoch):
            if not bn_frozen and step >= freeze_bn_at:
                freeze_batchnorm(module)
                bn_frozen = True
            if not obs_frozen and step >= freeze_obs_at:
                freeze_observers(module)
                obs_frozen = True
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
    return Training(settings.epochs, step, len(train), time.perf_counter() - started, freeze_bn_at, freeze_obs_at)


# --------------------------------------------------------------------------------------------------------- FX


def _cannot_trace(path: str, exc: BaseException) -> ExportError:
    return ExportError(
        f"QAT ({path}) cannot trace this model ({type(exc).__name__}: {first_line(exc)}): quantization-aware training "
        "needs a static graph (no Python branches on tensor values or shapes); rewrite the branch, or drop --qat"
    )


def prepare_fx_qat(
    model: nn.Module, example: torch.Tensor, backend: str, keep_float: tuple[str, ...] = ()
) -> torch.fx.GraphModule:
    """A training-mode copy of ``model`` with fake quantization for ``backend`` (``model`` is not modified).

    Raises:
        ExportError: FX cannot trace the model (exit 6).
    """
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    check_keep_float(model, keep_float)
    mapping = get_default_qat_qconfig_mapping(backend)
    for name in keep_float:
        mapping = mapping.set_module_name(name, None)
    source = copy.deepcopy(model).float().train()
    with quantized_engine(backend), known_warnings_silenced():
        try:
            return prepare_qat_fx(source, mapping, example_inputs=(example,))
        except Exception as exc:  # FX tracing fails on data-dependent control flow
            raise _cannot_trace("FX, prepare_qat_fx", exc) from None


def _fx_freeze_batchnorm(module: nn.Module) -> None:
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats

    module.apply(freeze_bn_stats)
    for m in module.modules():  # BatchNorm not fused into a convolution keeps its statistics too
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _fx_freeze_observers(module: nn.Module) -> None:
    from torch.ao.quantization import disable_observer

    module.apply(disable_observer)


def fx_qat(
    model: nn.Module, train: Split, preprocessing: Preprocessing, example: torch.Tensor, backend: str, settings: QatSection,
    *, batch_size: int, seed: int, keep_float: tuple[str, ...] = (),
) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """FX QAT: ``prepare_qat_fx`` → fine-tune on ``train`` → ``convert_fx``. Returns the INT8 model and its record."""
    from torch.ao.quantization.quantize_fx import convert_fx

    started = time.perf_counter()
    prepared = prepare_fx_qat(model, example, backend, keep_float)
    with quantized_engine(backend), known_warnings_silenced():
        training = fine_tune(
            prepared, train, preprocessing, settings, batch_size=batch_size, seed=seed,
            freeze_batchnorm=_fx_freeze_batchnorm, freeze_observers=_fx_freeze_observers, label=f"QAT (FX, {backend})",
        )  # fmt: skip
        prepared.eval()
        converted = convert_fx(prepared)
    record = {
        "engine": "torch.ao.quantization FX QAT (prepare_qat_fx / convert_fx)",
        "backend": backend,
        "qconfig": f"get_default_qat_qconfig_mapping({backend!r})",
        "per_channel": backend in ("x86", "fbgemm"),
        "modules_kept_float": list(keep_float),
        **_settings_record(settings),
        **training.to_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return converted, record


def _settings_record(settings: QatSection) -> dict[str, Any]:
    return {
        "learning_rate": settings.learning_rate,
        "optimizer": "Adam, cosine schedule, cross-entropy",
        "freeze_batchnorm_after": settings.freeze_batchnorm_after,
        "freeze_observers_after": settings.freeze_observers_after,
    }


# ------------------------------------------------------------------------------------------------------- PT2E


def pt2e_qat(
    model: nn.Module, train: Split, preprocessing: Preprocessing, example: torch.Tensor, settings: QatSection,
    *, batch_size: int, seed: int, max_batch: int, keep_float: tuple[str, ...] = (),
) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """PT2E QAT: ``torch.export`` (training mode) → ``prepare_qat_pt2e`` → fine-tune → ``convert_pt2e``.

    Raises:
        ExportError: torch.export cannot export the model (exit 6).
    """
    quiet_import_loggers()
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    started = time.perf_counter()
    source = copy.deepcopy(model).float().train()
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch, batch_size))
    x = example[:1].expand(2, *example.shape[1:]).contiguous()
    try:
        with known_warnings_silenced():
            program = torch.export.export(source, (x,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise _cannot_trace("PT2E, torch.export", exc) from None
    with known_warnings_silenced():
        prepared = prepare_qat_pt2e(program.module(), quantizer_for("xnnpack", keep_float, per_channel=True, qat=True))
        training = fine_tune(
            prepared, train, preprocessing, settings, batch_size=batch_size, seed=seed,
            # An exported graph has no per-module BatchNorm switch: its eval mode uses the running statistics.
            freeze_batchnorm=move_exported_model_to_eval,
            freeze_observers=lambda m: m.apply(disable_observer),
            label="QAT (PT2E, XNNPACK)",
        )  # fmt: skip
        move_exported_model_to_eval(prepared)
        converted = convert_pt2e(prepared)
    record = {
        "engine": "torchao.quantization.pt2e QAT (prepare_qat_pt2e / convert_pt2e)",
        "quantizer": "XNNPACKQuantizer (get_symmetric_quantization_config(is_per_channel=True, is_qat=True))",
        "scheme": "int8 activations (per-tensor affine), int8 weights (symmetric)",
        "per_channel": True,
        "modules_kept_float": list(keep_float),
        **_settings_record(settings),
        **training.to_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return converted, record


# ------------------------------------------------------------------------------------------ in the pipeline


def qat_model(ctx: Any, family: str) -> tuple[nn.Module, dict[str, Any]]:
    """The context's QAT model of this family, trained once per export on the training split."""
    if family not in ctx.qat_models:
        q = ctx.config
        settings = q.quantization.qat
        train = ctx.data.train
        common = {
            "batch_size": q.train.batch_size,
            "seed": q.train.seed,
            "keep_float": tuple(q.quantization.keep_float),
        }
        progress.status(
            f"quantization-aware training ({'FX, ' + ctx.profile.torch_engine if family == FX else 'PT2E, XNNPACK'}): "
            f"{settings.epochs} epoch(s) on {len(train):,} training items"
        )
        if family == FX:
            model, record = fx_qat(
                ctx.spec.module, train, ctx.spec.preprocessing, ctx.calibration[0], ctx.profile.torch_engine, settings,
                **common,
            )  # fmt: skip
        else:
            max_batch = max(q.data.batch_size, *q.benchmark.batch_sizes)
            model, record = pt2e_qat(
                ctx.spec.module, train, ctx.spec.preprocessing, ctx.calibration[0], settings, max_batch=max_batch,
                **common,
            )  # fmt: skip
        record["trained_on"] = f"the training split only ({len(train):,} items; the evaluation split is not used)"
        ctx.qat_models[family] = (model, record)
    return ctx.qat_models[family]
