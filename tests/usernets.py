"""A user's own models and data loaders, as a user's package would hold them (``usernets:build``, ...).

Nothing here comes from edge-opt: the models are plain torch modules and the dataset factory reads plain ``.npz``
files the tests wrote, so that ``--model usernets:build`` and ``--data usernets:dataset`` meet code edge-opt has
never seen. ``USERNETS_DATA`` names the folder holding ``train.npz`` / ``val.npz`` (uint8 NHWC images, labels) and
``stats.json`` (the user's own per-channel mean and std).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn


class TintNet(nn.Module):
    """A small 3-channel classifier for 32×32 RGB images (ten classes)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(num_classes: int = 10) -> nn.Module:
    return TintNet(num_classes)


class Encoder(nn.Module):
    """Not a classifier: a convolutional encoder whose output is a (16, 8, 8) feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def encoder() -> nn.Module:
    torch.manual_seed(7)
    return Encoder()


class NpzImages(torch.utils.data.Dataset):
    """(float CHW tensor preprocessed with the user's own statistics, label) from one of the tests' .npz files."""

    def __init__(self, path: Path, mean: list[float], std: list[float]) -> None:
        with np.load(path) as data:
            self.x, self.y = data["x"], data["y"]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.classes = [f"class{i}" for i in range(10)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.x[i]).permute(2, 0, 1).float() / 255.0
        x = torch.nn.functional.interpolate(x[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
        return (x - self.mean) / self.std, int(self.y[i])


def dataset(split: str) -> NpzImages:
    root = Path(os.environ["USERNETS_DATA"])
    stats = json.loads((root / "stats.json").read_text())
    return NpzImages(root / ("train.npz" if split == "train" else "val.npz"), stats["mean"], stats["std"])


def not_a_dataset() -> int:
    return 42


class Overflowing(nn.Module):
    """A classifier whose logits exceed float16's range (65504): its FP16 artifact cannot be right."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1)) * 1e6


def overflowing() -> nn.Module:
    torch.manual_seed(5)
    return Overflowing()
