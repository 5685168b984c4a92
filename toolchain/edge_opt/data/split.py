"""A split of data (images and, when the data has them, labels) and a dataset of two splits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from edge_opt.data.preprocessing import Preprocessing


@dataclass(frozen=True)
class Split:
    """Stored images (uint8 ``(N, H, W)`` or ``(N, H, W, C)``, or preprocessed float32 ``(N, C, H, W)``) and
    int64 labels ``(N,)``, or None for unlabelled data."""

    images: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def batches(
        self,
        preprocessing: Preprocessing,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        limit: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Preprocessed ``(inputs, labels)`` batches (labels None when unlabelled); ``limit`` caps the batches."""
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else None
        for count, start in enumerate(range(0, n, batch_size)):
            if limit is not None and count >= limit:
                return
            idx = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
            yield preprocessing.apply(self.images[idx]), None if self.labels is None else self.labels[idx]

    def head(self, n: int) -> Split:
        return Split(self.images[:n], None if self.labels is None else self.labels[:n])

    def take(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], None if self.labels is None else self.labels[index])


@dataclass(frozen=True)
class Dataset:
    """What an export draws from: ``train`` (calibration, fine-tuning, BatchNorm statistics) and ``eval``
    (accuracy or fidelity, parity gates, the device's evaluation set)."""

    train: Split
    eval: Split
    #: One line for tables and manifests: "Fashion-MNIST test split", "image folder data/ (val/)", ...
    description: str
    #: Class names in label order (folder names for an image folder), when the data names them.
    class_names: tuple[str, ...] | None = None
    #: How the data was read and split, for the manifest and the JSON result.
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return self.eval.labelled
