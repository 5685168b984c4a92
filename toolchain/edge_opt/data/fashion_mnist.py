"""The built-in data: Fashion-MNIST through torchvision (read from a local copy, or downloaded once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from edge_opt.data.split import Dataset, Split
from edge_opt.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DESCRIPTION = "Fashion-MNIST test split"


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    test: Split
    root: Path

    def as_dataset(self) -> Dataset:
        """Training split for calibration and training, the test split for evaluation."""
        record = {"source": "fashion-mnist", "root": str(self.root), "train": len(self.train), "eval": len(self.test)}
        return Dataset(self.train, self.test, DESCRIPTION, CLASS_NAMES, record)


_MISSING_FIX = (
    "pass --data-dir DIR (or set EDGE_OPT_DATA_DIR) pointing at a folder that holds FashionMNIST/raw, "
    "or run once with internet access so torchvision can download it; or bring your own data with --data"
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
