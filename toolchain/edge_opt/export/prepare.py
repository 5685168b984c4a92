"""What every artifact of one export is built from: the data, the model (trained, loaded or random-init; pruned
when asked), the calibration batches, the FP32 reference logits, and the evaluation set a device checks with."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_opt import evalset, progress
from edge_opt.config import Config, cache_dir, resolve_data_root
from edge_opt.data import Dataset, Split, load_fashion_mnist
from edge_opt.data.loading import DataPlan, open_data
from edge_opt.data.preprocessing import GREY_28
from edge_opt.errors import ConfigError, DataError
from edge_opt.formats.evaluation import TorchRunner, predict
from edge_opt.model.models import ModelSpec, build_model, parameter_bytes, recalibrate_batchnorm
from edge_opt.model.train import trained_checkpoint
from edge_opt.quant import qat
from edge_opt.quiet import known_warnings_silenced
from edge_opt.targets import TargetProfile, resolve_target

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
    data: Dataset
    eval_split: Split
    calibration: list[torch.Tensor]
    fp32_logits: np.ndarray  # eager FP32 on eval_split, one flattened row per item
    parity_n: int
    model_record: dict[str, Any]
    work: Path  # scratch space for baselines and intermediate files
    int8_model: torch.nn.Module | None = None  # FX INT8, built once and shared by the formats
    int8_seconds: float = 0.0  # prepare + calibrate + convert
    device_eval: dict[str, Any] | None = None  # the inputs + labels evaluation set written for this export
    pt2e_model: torch.nn.Module | None = None  # PT2E INT8 (the executorch format's), built once
    pt2e_seconds: float = 0.0
    #: Quantization-aware trained models by family (edge_opt.quant.qat: "fx", "pt2e"), each trained once per export.
    qat_models: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> torch.Tensor | None:
        """The evaluation split's labels; None for unlabelled data."""
        return self.eval_split.labels

    @property
    def metric(self) -> str:
        """The headline figure: ``top1`` (labelled data, a classifier) or ``sqnr_db`` (output fidelity vs FP32)."""
        return "top1" if self.labels is not None and self.spec.classifier else "sqnr_db"


def default_statistics_warning(config: Config, spec: ModelSpec) -> str | None:
    """A warning when a model's own weights get default normalisation because no mean or std was given."""
    m = config.model
    unset = [name for name, value in (("mean", m.mean), ("std", m.std)) if value is None]
    p = spec.preprocessing
    if not unset or p.preprocessed:
        return None
    flags = f"--{'/--'.join(unset)} or model.{'/model.'.join(unset)}"
    if p.source != GREY_28:
        return (
            f"no {' and '.join(unset)} given: {spec.name}'s inputs are your images scaled to [0, 1] (mean {p.mean}, "
            f"std {p.std}); if it was trained with other normalisation (torchvision's Normalize), set {flags}"
        )
    if m.checkpoint is None or spec.name == "smallcnn":
        return None
    return (
        f"{spec.name}'s input is normalised with Fashion-MNIST's {' and '.join(unset)} (mean {p.mean}, std {p.std}): "
        f"if it was trained with other statistics, set them ({flags}), "
        "or its accuracy and every check of it are measured on inputs it never saw"
    )


def prepare_model(config: Config, profile: TargetProfile, work: Path) -> ExportContext:
    """Data, model (trained / loaded / pruned), calibration batches and FP32 reference logits, as an export sees them."""
    with known_warnings_silenced():
        return _prepare(config, profile, work)


def open_user_data(config: Config) -> DataPlan | None:
    d = config.data
    return open_data(d.source, d.calibration, d.eval, val_fraction=d.val_fraction, seed=config.train.seed)


def _build(config: Config, plan: DataPlan | None) -> ModelSpec:
    m = config.model
    if plan is None:
        return build_model(
            m.name, num_classes=m.num_classes, input_size=m.input_size, checkpoint=m.checkpoint,
            channels=m.channels, mean=m.mean, std=m.std,
        )  # fmt: skip
    input_size = m.input_size or plan.stored_size()
    if input_size is None and m.name != "smallcnn":
        raise ConfigError(
            f"--input-size is needed with --data {plan.description.split(',')[0]}: the size {m.name} takes, e.g. 224 "
            "or 32x32 (images are resized to it; --resize N first resizes the shorter side, then center-crops)"
        )
    stored_size = plan.stored_size()
    if stored_size and m.input_size and tuple(m.input_size) != stored_size:
        raise DataError(
            f"the data's inputs are preprocessed at {stored_size[0]}x{stored_size[1]}, --input-size says "
            f"{m.input_size[0]}x{m.input_size[1]}: preprocessed inputs are fed as they are; drop --input-size"
        )
    stored = plan.stored_channels()
    spec = build_model(
        m.name,
        num_classes=m.num_classes or plan.classes_in_data(),
        input_size=input_size,
        checkpoint=m.checkpoint,
        # A factory's model is probed for its channels: the data's are the likely answer. Others take what they take.
        channels=m.channels or (stored if ":" in m.name and stored in (1, 3) else None),
        mean=m.mean,
        std=m.std,
        resize_to=config.data.resize,
        source=plan.stored,
    )
    p = spec.preprocessing
    fits = stored is None or stored == p.channels or (stored == 1 and not p.preprocessed)
    if not fits:
        raise DataError(
            f"the data's inputs have {stored} channel(s), {spec.name} takes {p.channels}: "
            + ("give inputs with the model's channels" if p.preprocessed else "give images with the model's channels "
               "(an image folder is converted for you), or a model that takes them")
        )  # fmt: skip
    return spec


def _load(config: Config, plan: DataPlan | None, spec: ModelSpec, needs_training_data: bool) -> Dataset:
    d = config.data
    if plan is None:
        dataset = load_fashion_mnist(resolve_data_root(config), download=d.download).as_dataset()
        if d.eval_samples is not None:
            dataset = Dataset(dataset.train, dataset.eval.head(d.eval_samples), dataset.description, dataset.class_names,
                              dataset.record)  # fmt: skip
        return dataset
    calibration_items = d.batch_size * max(config.calibration_batches, BATCHNORM_BATCHES)
    dataset = plan.load(
        spec.preprocessing, train_limit=None if needs_training_data else calibration_items, eval_limit=d.eval_samples
    )
    if dataset.labelled and spec.classifier:
        top = int(dataset.eval.labels.max()) if len(dataset.eval) else -1  # type: ignore[union-attr]
        if dataset.train.labels is not None and len(dataset.train):
            top = max(top, int(dataset.train.labels.max()))
        if top >= spec.num_outputs:
            raise DataError(
                f"the data has labels up to {top}, {spec.name} gives {spec.num_outputs} outputs per item: the labels "
                "must be class indices 0..outputs-1: set --num-classes to the model's classes, or fix the labels"
            )
    return dataset


def _prepare(config: Config, profile: TargetProfile, work: Path) -> ExportContext:
    plan = open_user_data(config)
    m = config.model
    torch.manual_seed(config.train.seed)  # random-init weights, and so every export, are reproducible
    spec = _build(config, plan)
    trains = m.checkpoint is None and spec.name in TRAINABLE_BY_DEFAULT
    fine_tunes = config.pruning.amount > 0 and config.pruning.fine_tune_epochs > 0 and not spec.random_init
    data = _load(config, plan, spec, needs_training_data=trains or fine_tunes or qat.requested(config))
    class_names = list(data.class_names) if data.class_names else None
    record: dict[str, Any] = {"name": spec.name, "num_classes": spec.num_outputs if spec.classifier else None,
                              "class_names": class_names}  # fmt: skip
    if m.checkpoint is not None:
        record["weights"] = "checkpoint"
        record["checkpoint"] = str(m.checkpoint)
    elif trains:
        if data.train.labels is None:
            raise DataError(
                f"{spec.name} has no weights for this data and the training data has no labels to train it: give "
                "--checkpoint (your trained weights) or labelled data"
            )
        progress.status(f"weights of {spec.name} for {'Fashion-MNIST' if plan is None else 'the training data'}: cached, "
                        "shipped with edge-opt, or trained once")
        path, origin = trained_checkpoint(spec.module, spec.name, data.train, spec.preprocessing, config.train, cache_dir())
        progress.status({"cached": "using cached", "shipped": "using the shipped", "trained": "trained and cached"}[origin]
                        + f" weights {path}")
        spec.random_init = False
        record["weights"] = "trained"
        record["training"] = config.train.model_dump(mode="json")
    else:
        record["weights"] = "random-init"
        if _recalibrate_batchnorm(config, spec, data):
            record["batchnorm_recalibrated_batches"] = BATCHNORM_BATCHES
    qat.check_request(config, data.train, spec.classifier, spec.random_init)
    if config.pruning.amount > 0:
        record["pruning"] = _prune(config, spec, data)
    record["parameters"] = sum(p.numel() for p in spec.module.parameters())
    record["fp32_parameter_bytes"] = parameter_bytes(spec.module)

    eval_split = data.eval
    if len(eval_split) == 0 or len(data.train) == 0:
        raise DataError(f"{data.description}: the {'evaluation' if len(data.train) else 'calibration'} split is empty")
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
    progress.status(f"evaluating FP32 {spec.name} on {len(eval_split):,} items of {data.description}")
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
    """The first evaluation items, preprocessed, with their labels if any: what a device evaluates each artifact on."""
    p = ctx.spec.preprocessing
    n = evalset.samples_for(ctx.config.export.device_eval_samples, len(ctx.eval_split), 4 * p.channels * p.height * p.width)
    if n == 0:
        return None
    head = ctx.eval_split.head(n)
    inputs = np.concatenate([x.numpy() for x, _ in head.batches(p, ctx.config.data.batch_size)]).astype(np.float32)
    arrays = {"inputs": inputs}
    if head.labels is not None:
        arrays["labels"] = head.labels.numpy().astype(np.int64)
    description = {"dataset": ctx.data.description, "first": n, "preprocessing": p.to_manifest()}
    record = evalset.publish(out_dir, arrays, description)
    return {"eval_set_sha256": record["sha256"], "samples": n}


def _recalibrate_batchnorm(config: Config, spec: ModelSpec, data: Dataset) -> bool:
    """Random weights: re-estimate BatchNorm statistics on training batches, so outputs are not degenerate."""
    warm = data.train.batches(spec.preprocessing, config.data.batch_size, shuffle=True, limit=BATCHNORM_BATCHES)
    return recalibrate_batchnorm(spec.module, [x for x, _ in warm])


def _prune(config: Config, spec: ModelSpec, data: Dataset) -> dict[str, Any]:
    """Prune the model in place, then fine-tune it (trained weights) or re-estimate BatchNorm (random weights)."""
    from edge_opt.config import TrainSection
    from edge_opt.model.pruning import prune, sparsity
    from edge_opt.model.train import train_classifier

    p = config.pruning
    before = sum(x.numel() for x in spec.module.parameters())
    example = next(data.train.batches(spec.preprocessing, 2))[0]
    progress.status(f"pruning {p.amount:.0%} ({p.method.value})")
    prune(spec.module, example, p.amount, p.method)
    tuned = 0
    if spec.random_init:
        _recalibrate_batchnorm(config, spec, data)
    elif p.fine_tune_epochs:
        if data.train.labels is None:
            raise DataError(
                "pruning fine-tunes the model on labelled training data, and this data has no labels: give labelled "
                "data, or set pruning.fine_tune_epochs: 0 in --config (the pruned model is then not fine-tuned)"
            )
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


