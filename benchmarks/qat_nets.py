"""Models for ``benchmarks/bench_qat.py``, importable as ``qat_nets:<factory>`` (benchmarks/ on PYTHONPATH).

``mobilenet_tiny``: a MobileNet-style network for 28×28 grey images: a 3×3 stem, then depthwise-separable blocks
(depthwise 3×3 + BatchNorm + ReLU, pointwise 1×1 + BatchNorm + ReLU), global average pooling and a linear
classifier. The kind of depthwise-heavy, low-resolution model whose INT8 post-training quantization loses points.
"""

from __future__ import annotations

from torch import nn


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )  # fmt: skip


class MobileNetTiny(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            _separable(w, 2 * w, 2), _separable(2 * w, 2 * w, 1),
            _separable(2 * w, 4 * w, 2), _separable(4 * w, 4 * w, 1),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def mobilenet_tiny(num_classes: int = 10) -> nn.Module:
    return MobileNetTiny(num_classes)
