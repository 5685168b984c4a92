"""Models for tests, importable as ``edge_test_models:<factory>`` (tests/ is on PYTHONPATH in the test env)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """A small classifier for 28x28 grey images."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 14 * 14, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2), 1))


class DataDependentNet(TinyNet):
    """Takes a Python branch on the batch size: tracing (on one image) bakes in the wrong branch for batches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if x.shape[0] == 1:
            return logits
        return logits.flip(1)


class Fp16OverflowNet(TinyNet):
    """Logits in the millions: fine in float32, infinite in float16 (whose largest number is 65,504)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 1e6


class ValueBranchNet(TinyNet):
    """Branches in Python on a tensor's value (the same side for every real image): tracing by example records it
    right, FX symbolic tracing (quantization-aware training's) cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if bool(x.abs().max() >= 0):
            return logits
        return -logits


def value_branch(num_classes: int = 10) -> nn.Module:
    return ValueBranchNet(num_classes)


def fp16_overflow(num_classes: int = 10) -> nn.Module:
    return Fp16OverflowNet(num_classes)


def tiny(num_classes: int = 10) -> nn.Module:
    return TinyNet(num_classes)


def data_dependent(num_classes: int = 10) -> nn.Module:
    return DataDependentNet(num_classes)


def not_a_model() -> object:
    return object()


def smallcnn_rgb(num_classes: int = 10) -> nn.Module:
    """SmallCNN whose first convolution takes 3 channels: a model of the user's own trained on RGB inputs."""
    from edge_opt.model.models import SmallCNN

    model = SmallCNN(num_classes)
    model.features[0] = nn.Conv2d(3, 16, kernel_size=3, padding=1)
    return model
