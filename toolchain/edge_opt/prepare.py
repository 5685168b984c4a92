"""What every artifact of one export is built from: the data, the model (trained, loaded or random-init; pruned
when asked), the calibration batches, the FP32 reference logits, and the evaluation set a device checks with."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_opt import evalset, progress
from edge_opt.config import Config, cache_dir, resolve_data_root
from edge_opt.data import CLASS_NAMES, FashionMNIST, Split, load_fashion_mnist
from edge_opt.evaluate import TorchRunner, predict
from edge_opt.models import ModelSpec, build_model, parameter_bytes, recalibrate_batchnorm
from edge_opt.quiet import known_warnings_silenced
from edge_opt.targets import TargetProfile, resolve_target
from edge_opt.train import trained_checkpoint

#: Training batches used to re-estimate BatchNorm statistics of random-init models.
BATCHNORM_BATCHES = 8
#: Models whose built-in weights are trained on Fashion-MNIST when no checkpoint is given.
TRAINABLE_BY_DEFAULT = ("smallcnn",)


@dataclass
class ExportContext:
    """Everything the builders of one export share: the config, the target, the prepared model and its data."""

    config: Config
    profile: TargetProfile
    host_profile: str  # resolve_target("host").name: the evaluation mode depends on it
    spec: ModelSpec
    data: FashionMNIST
    eval_split: Split
    calibration: list[torch.Tensor]
    fp32_logits: np.ndarray  # eager FP32 on eval_split
    parity_n: int
    model_record: dict[str, Any]
    work: Path  # scratch space for baselines and intermediate files
    int8_model: torch.nn.Module | None = None  # FX INT8, built once and shared by the formats
    int8_seconds: float = 0.0  # prepare + calibrate + convert
    device_eval: dict[str, Any] | None = None  # the inputs + labels evaluation set written for this export
    pt2e_model: torch.nn.Module | None = None  # PT2E INT8 (the executorch format's), built once
    pt2e_seconds: float = 0.0


def default_statistics_warning(config: Config, spec: ModelSpec) -> str | None:
    """A warning when a model's own weights are fed Fashion-MNIST's mean or std because none was given."""
    m = config.model
    unset = [name for name, value in (("mean", m.mean), ("std", m.std)) if value is None]
    if m.checkpoint is None or spec.name == "smallcnn" or not unset:
        return None
    p = spec.preprocessing
    return (
        f"{spec.name}'s input is normalised with Fashion-MNIST's {' and '.join(unset)} (mean {p.mean}, std {p.std}): "
        f"if it was trained with other statistics, set them (--{'/--'.join(unset)} or model.{'/model.'.join(unset)}), "
        "or its accuracy and every check of it are measured on inputs it never saw"
    )


def prepare_model(config: Config, profile: TargetProfile, work: Path) -> ExportContext:
    """Data, model (trained / loaded / pruned), calibration batches and FP32 reference logits, as an export sees them."""
    with known_warnings_silenced():
        return _prepare(config, profile, work)


def _prepare(config: Config, profile: TargetProfile, work: Path) -> ExportContext:
    data = load_fashion_mnist(resolve_data_root(config), download=config.data.download)
    m = config.model
    torch.manual_seed(config.train.seed)  # random-init weights, and so every export, are reproducible
    spec = build_model(
        m.name,
        num_classes=m.num_classes,
        input_size=m.input_size,
        checkpoint=m.checkpoint,
        channels=m.channels,
        mean=m.mean,
        std=m.std,
    )
    record: dict[str, Any] = {"name": spec.name, "num_classes": m.num_classes, "class_names": list(CLASS_NAMES)}
    if m.checkpoint is not None:
        record["weights"] = "checkpoint"
        record["checkpoint"] = str(m.checkpoint)
    elif spec.name in TRAINABLE_BY_DEFAULT:
        progress.status(f"training {spec.name} on Fashion-MNIST (once; cached)")
        path, cached = trained_checkpoint(spec.module, spec.name, data.train, spec.preprocessing, config.train, cache_dir())
        progress.status(f"{'using cached' if cached else 'cached'} weights {path}")
        spec.random_init = False
        record["weights"] = "trained"
        record["training"] = config.train.model_dump(mode="json")
    else:
        record["weights"] = "random-init"
        if _recalibrate_batchnorm(config, spec, data):
            record["batchnorm_recalibrated_batches"] = BATCHNORM_BATCHES
    if config.pruning.amount > 0:
        record["pruning"] = _prune(config, spec, data)
    record["parameters"] = sum(p.numel() for p in spec.module.parameters())
    record["fp32_parameter_bytes"] = parameter_bytes(spec.module)

    eval_split = data.test if config.data.eval_samples is None else data.test.head(config.data.eval_samples)
    calibration = [
        x
        for x, _ in data.train.batches(
            spec.preprocessing,
            config.data.batch_size,
            shuffle=True,
            seed=config.train.seed + 1000,
            limit=config.calibration_batches,
        )
    ]
    progress.status(f"evaluating FP32 {spec.name} on {len(eval_split)} test images")
    fp32_logits = predict(TorchRunner(spec.module), eval_split, spec.preprocessing, config.data.batch_size)
    parity_n = min(config.export.parity_samples, len(eval_split))
    host = resolve_target("host").name
    return ExportContext(config, profile, host, spec, data, eval_split, calibration, fp32_logits, parity_n, record, work)


@contextlib.contextmanager
def evaluation_sets_kept_only_with_artifacts(out_dir: Path) -> Iterator[None]:
    """An export that fails leaves nothing behind: evaluation sets it wrote are removed again."""
    folder = out_dir / evalset.FOLDER
    before = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    try:
        yield
    except BaseException:
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name not in before:
                    shutil.rmtree(entry, ignore_errors=True)
            if not before and not any(folder.iterdir()):
                folder.rmdir()
        raise


def write_device_eval_set(ctx: ExportContext, out_dir: Path) -> dict[str, Any] | None:
    """The first test images, preprocessed, with their labels: what a device evaluates each artifact on."""
    p = ctx.spec.preprocessing
    n = evalset.samples_for(ctx.config.export.device_eval_samples, len(ctx.eval_split), 4 * p.channels * p.height * p.width)
    if n == 0:
        return None
    head = ctx.eval_split.head(n)
    inputs = np.concatenate([x.numpy() for x, _ in head.batches(p, ctx.config.data.batch_size)]).astype(np.float32)
    labels = head.labels.numpy().astype(np.int64)
    description = {"dataset": "Fashion-MNIST test split", "first": n, "preprocessing": p.to_manifest()}
    record = evalset.publish(out_dir, {"inputs": inputs, "labels": labels}, description)
    return {"eval_set_sha256": record["sha256"], "samples": n}


def _recalibrate_batchnorm(config: Config, spec: ModelSpec, data: FashionMNIST) -> bool:
    """Random weights: re-estimate BatchNorm statistics on training batches, so outputs are not degenerate."""
    warm = data.train.batches(spec.preprocessing, config.data.batch_size, shuffle=True, limit=BATCHNORM_BATCHES)
    return recalibrate_batchnorm(spec.module, [x for x, _ in warm])


def _prune(config: Config, spec: ModelSpec, data: FashionMNIST) -> dict[str, Any]:
    """Prune the model in place, then fine-tune it (trained weights) or re-estimate BatchNorm (random weights)."""
    from edge_opt.config import TrainSection
    from edge_opt.pruning import prune, sparsity
    from edge_opt.train import train_classifier

    p = config.pruning
    before = sum(x.numel() for x in spec.module.parameters())
    example = next(data.train.batches(spec.preprocessing, 2))[0]
    progress.status(f"pruning {p.amount:.0%} ({p.method.value})")
    prune(spec.module, example, p.amount, p.method)
    tuned = 0
    if spec.random_init:
        _recalibrate_batchnorm(config, spec, data)
    elif p.fine_tune_epochs:
        progress.status(f"fine-tuning the pruned model for {p.fine_tune_epochs} epoch(s)")
        settings = TrainSection(
            epochs=p.fine_tune_epochs,
            learning_rate=p.fine_tune_learning_rate,
            batch_size=config.train.batch_size,
            seed=config.train.seed,
        )
        train_classifier(spec.module, data.train, spec.preprocessing, settings)
        tuned = p.fine_tune_epochs
    spec.module.eval()
    return {
        "amount": p.amount,
        "method": p.method.value,
        "fine_tune_epochs": tuned,
        "parameters_before": before,
        "parameters_after": sum(x.numel() for x in spec.module.parameters()),
        "weight_sparsity": round(sparsity(spec.module), 4),
    }


