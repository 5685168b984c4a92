"""Which data an export uses: the built-in Fashion-MNIST, or the user's (``--data``, ``--calibration-data``,
``--eval-data``), and how one source is split into calibration / training and evaluation.

:func:`open_data` opens the sources (cheap: image files are listed, not decoded) so that the model can be built
with the data's number of classes; :meth:`DataPlan.load` then decodes what the export needs, at the model's
channels and input size.

Splitting one source: an image folder with ``train/`` and ``val/`` (or ``test/``) subfolders uses them; anything
else is split at random with the training seed (``data.val_fraction`` held out for evaluation), the same way on
every run, and the output says so. The evaluation items of an image folder are shuffled with that seed too, so
that the first N of them (``--eval-samples``, the device's evaluation set) hold every class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edge_opt.data.preprocessing import Preprocessing
from edge_opt.data.readers import Source, open_source, splits_itself
from edge_opt.data.split import Dataset
from edge_opt.errors import DataError


@dataclass
class DataPlan:
    """The user's data, opened: which items train and which evaluate, before any image is decoded."""

    train: Source
    eval: Source
    train_index: torch.Tensor
    eval_index: torch.Tensor
    description: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.eval.class_names or self.train.class_names

    @property
    def labelled(self) -> bool:
        return self.eval.labels is not None

    @property
    def train_labelled(self) -> bool:
        return self.train.labels is not None

    def classes_in_data(self) -> int | None:
        """The number of classes the data names (an image folder's class subfolders, an .npz's ``classes``, a
        dataset's ``classes``); None otherwise: labels alone do not say how many outputs the model has."""
        return len(self.class_names) if self.class_names else None

    def stored_channels(self) -> int | None:
        """Channels of the stored arrays (None for image files, which are converted to what the model takes)."""
        images = self.eval.images
        if images is None:
            return None
        if images.is_floating_point():
            return int(images.shape[1])
        return 1 if images.ndim == 3 else int(images.shape[-1])

    def stored_size(self) -> tuple[int, int] | None:
        """(height, width) of preprocessed float inputs, which are fed as they are; None otherwise."""
        images = self.eval.images
        if images is not None and images.is_floating_point():
            return (int(images.shape[2]), int(images.shape[3]))
        return None

    @property
    def stored(self) -> str:
        return self.eval.stored

    def load(self, preprocessing: Preprocessing, *, train_limit: int | None, eval_limit: int | None) -> Dataset:
        """Decode (image folders) or select (arrays) the items of both splits."""
        train_index = self.train_index if train_limit is None else self.train_index[:train_limit]
        eval_index = self.eval_index if eval_limit is None else self.eval_index[:eval_limit]
        evaluation = self.eval.materialise(eval_index, preprocessing, "evaluation")
        train = self.train.materialise(train_index, preprocessing, "calibration / training")
        record = {**self.record, "eval_items_used": len(evaluation), "train_items_used": len(train)}
        return Dataset(train, evaluation, self.description, self.class_names, record)


def open_data(
    source: str | None, calibration: str | None, evaluation: str | None, *, val_fraction: float, seed: int
) -> DataPlan | None:
    """Open the user's data; None when none is given (the built-in Fashion-MNIST).

    Raises:
        DataError: a source is missing, empty or unreadable, or the two halves do not fit together.
    """
    if source is None and calibration is None and evaluation is None:
        return None
    train_spec, eval_spec = calibration or source, evaluation or source
    if train_spec is None or eval_spec is None:
        missing = "--eval-data" if eval_spec is None else "--calibration-data"
        raise DataError(f"{missing} is not given and there is no --data to take it from: give --data, or both halves")
    if train_spec == eval_spec:
        return _split_one(train_spec, val_fraction, seed)
    train, evaluation_source = open_source(train_spec, "train"), open_source(eval_spec, "eval")
    _check_not_empty(train, "calibration / training")
    _check_not_empty(evaluation_source, "evaluation")
    record = {"train": _describe(train), "eval": _describe(evaluation_source), "split": "separate sources"}
    return DataPlan(
        train,
        evaluation_source,
        _shuffled(len(train), seed),
        _eval_order(evaluation_source, seed),
        f"{_name(evaluation_source)}",
        record,
    )


def _split_one(spec: str, val_fraction: float, seed: int) -> DataPlan:
    if splits_itself(spec):
        train, evaluation = open_source(spec, "train"), open_source(spec, "eval")
        _check_not_empty(train, "training")
        _check_not_empty(evaluation, "evaluation")
        if train.class_names != evaluation.class_names:
            only = sorted(set(train.class_names or ()) ^ set(evaluation.class_names or ()))
            raise DataError(
                f"{train.where} and {evaluation.where} have different class folders ({', '.join(only)} in only one): "
                "give both the same classes, or the class indices would not match"
            )
        folders = f"folders train/ and {Path(evaluation.where).name}/" if train.files is not None else "split='train' / 'eval'"
        record = {"train": _describe(train), "eval": _describe(evaluation), "split": folders}
        return DataPlan(train, evaluation, _shuffled(len(train), seed), _eval_order(evaluation, seed), _name(evaluation), record)
    whole = open_source(spec, "all")
    n = len(whole)
    if n < 2:
        raise DataError(f"{whole.where} has {n} item(s): splitting it into calibration and evaluation needs at least 2")
    order = _shuffled(n, seed)
    n_eval = min(n - 1, max(1, round(n * val_fraction)))
    held = f"{100 - val_fraction * 100:.0f}/{val_fraction * 100:.0f}"
    split = f"random {held} split with seed {seed} ({n - n_eval} / {n_eval} items)"
    record = {"source": _describe(whole), "split": split}
    description = f"{_name(whole)}, {n_eval:,} items held out ({split})"
    return DataPlan(whole, whole, order[n_eval:], order[:n_eval], description, record)


def _shuffled(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _eval_order(source: Source, seed: int) -> torch.Tensor:
    """Image folders are listed class by class: shuffle them so any first N hold every class. Arrays keep their order."""
    return _shuffled(len(source), seed + 1) if source.files is not None else torch.arange(len(source))


def _check_not_empty(source: Source, what: str) -> None:
    if len(source) == 0:
        raise DataError(f"the {what} data {source.where} is empty: give it items")


def _describe(source: Source) -> dict[str, Any]:
    return {
        "kind": source.kind,
        "where": source.where,
        "items": len(source),
        "labelled": source.labels is not None,
        "classes": list(source.class_names) if source.class_names else None,
    }


def _name(source: Source) -> str:
    kind = {"image-folder": "image folder", "npz": ".npz", "factory": "data factory"}[source.kind]
    return f"{kind} {source.where}"
