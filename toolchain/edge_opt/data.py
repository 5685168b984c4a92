"""Fashion-MNIST through torchvision, and the preprocessing every artifact's manifest records.

torchvision reads (or downloads) the dataset; the images are then kept as one uint8 tensor and preprocessed in a
vectorised step. That step is exactly what :class:`Preprocessing` describes, so a consumer of an artifact can feed
raw 28×28 uint8 images with nothing but the manifest: scale by 1/255, normalise with mean and std, resize if the
model wants another size, repeat the grey channel if it wants three.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edge_opt.errors import DataError

#: Per-pixel statistics of the Fashion-MNIST training split (after scaling to [0, 1]).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class Preprocessing:
    """How raw uint8 images become the model's input tensor (recorded in every manifest)."""

    height: int = 28
    width: int = 28
    channels: int = 1
    scale: float = 1.0 / 255.0
    #: One value for every channel, or one per channel (e.g. ImageNet's three for an RGB model).
    mean: float | tuple[float, ...] = FASHION_MNIST_MEAN
    std: float | tuple[float, ...] = FASHION_MNIST_STD
    resize: str = "bilinear"  # used only when (height, width) differs from the raw 28×28
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (tuple, list)) and len(value) not in (1, self.channels):
                raise ValueError(f"{name} has {len(value)} values for a {self.channels}-channel input: give 1 or {self.channels}")

    def is_default_normalisation(self) -> bool:
        """Fashion-MNIST's own statistics (what SmallCNN is trained with)."""
        return _per_channel(self.mean) == (FASHION_MNIST_MEAN,) and _per_channel(self.std) == (FASHION_MNIST_STD,)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 28, 28)`` → float32 ``(N, C, H, W)``."""
        x = images.to(torch.float32).unsqueeze(1) * self.scale
        if x.shape[-2:] != (self.height, self.width):
            x = F.interpolate(x, size=(self.height, self.width), mode=self.resize, align_corners=False)
        if self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        mean = torch.tensor(_per_channel(self.mean), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(_per_channel(self.std), dtype=torch.float32).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()

    def to_manifest(self) -> dict[str, Any]:
        return {
            "source": "uint8 grayscale, 28x28, values 0..255",
            "steps": [
                "x = image.astype(float32) * scale",
                "resize to (height, width) with `resize` interpolation if not 28x28",
                "repeat the grey channel `channels` times; layout NCHW",
                "x[:, c] = (x[:, c] - mean[c]) / std[c] (one value: the same for every channel)",
            ],
            **asdict(self),
        }


def _per_channel(value: float | tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else (float(value),)


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(
        self,
        preprocessing: Preprocessing,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        limit: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Preprocessed ``(inputs, labels)`` batches; ``limit`` caps the number of batches."""
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else None
        for count, start in enumerate(range(0, n, batch_size)):
            if limit is not None and count >= limit:
                return
            idx = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
            yield preprocessing.apply(self.images[idx]), self.labels[idx]

    def head(self, n: int) -> Split:
        return Split(self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    test: Split
    root: Path


_MISSING_FIX = (
    "pass --data-dir DIR (or set EDGE_OPT_DATA_DIR) pointing at a folder that holds FashionMNIST/raw, "
    "or run once with internet access so torchvision can download it"
)


def load_fashion_mnist(root: Path, *, download: bool) -> FashionMNIST:
    """Load both splits from ``root`` (torchvision's layout: ``root/FashionMNIST/raw``).

    Raises:
        DataError: the data is not there and cannot be downloaded; the message says how to fix it.
    """
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    def read(train: bool) -> Split:
        try:
            ds = TorchvisionFashionMNIST(str(root), train=train, download=False)
        except RuntimeError:
            if not download:
                raise DataError(f"Fashion-MNIST not found under {root}: {_MISSING_FIX}") from None
            try:
                ds = TorchvisionFashionMNIST(str(root), train=train, download=True)
            except (RuntimeError, OSError) as exc:
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                raise DataError(
                    f"Fashion-MNIST not found under {root} and the download failed ({reason}): {_MISSING_FIX}"
                ) from None
        return Split(ds.data.clone(), ds.targets.clone().to(torch.int64))

    return FashionMNIST(train=read(True), test=read(False), root=root)
