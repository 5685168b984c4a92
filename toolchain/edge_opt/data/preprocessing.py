"""How stored images become the model's input tensor: the one definition every artifact's manifest records.

Images reach :meth:`Preprocessing.apply` in one of three forms (see :mod:`edge_opt.data.split`):

* uint8 ``(N, H, W)``: grey images (Fashion-MNIST's 28×28);
* uint8 ``(N, H, W, C)``: images with channels (a user's image folder, decoded once; an ``.npz`` of images);
* float32 ``(N, C, H, W)``: inputs the user already preprocessed (passed through unchanged).

The steps are torchvision's evaluation habit: scale to [0, 1], resize (and, when ``resize_to`` is set, resize to
that size first and then center-crop to the model's size), adapt grey to the channels the model takes, normalise
with ``mean`` / ``std`` per channel. A consumer of an artifact reproduces them from the manifest alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F

from edge_opt.errors import DataError

#: Per-pixel statistics of the Fashion-MNIST training split (after scaling to [0, 1]).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

#: What the stored images are, as the manifest states it.
GREY_28 = "uint8 grayscale, 28x28, values 0..255"
IMAGES = "image files decoded by Pillow, converted to the model's channels and resized with Pillow, values 0..255"
UINT8_ARRAY = "uint8 images (N, H, W[, C]), values 0..255, resized with Pillow like image files"
PREPROCESSED = "float32 array (N, C, H, W), already preprocessed by the user"


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
    resize: str = "bilinear"  # used only when the stored size differs from (height, width)
    layout: str = "NCHW"
    #: Resize to this (height, width) first, then center-crop to (height, width); None: resize straight to it.
    resize_to: tuple[int, ...] | None = None  # (N,): the shorter side; (H, W)
    #: What the stored images are (GREY_28, IMAGES, UINT8_ARRAY or PREPROCESSED).
    source: str = GREY_28

    def __post_init__(self) -> None:
        for name in ("mean", "std", "scale"):  # NaN, infinities or a zero std would make every input NaN or inf
            value = getattr(self, name)
            values = value if isinstance(value, (tuple, list)) else (value,)
            if not values or not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise ValueError(f"{name} {str(value)[:40]} is not a finite number (one, or one per channel)")
            if name != "mean" and min(values) <= 0:
                raise ValueError(f"{name} {str(value)[:40]} must be positive: the pixels are scaled and divided by it")
        if self.resize_to is not None and (
            not 1 <= len(self.resize_to) <= 2 or not all(type(v) is int and v > 0 for v in self.resize_to)
        ):
            raise ValueError(f"resize {str(self.resize_to)[:40]} is not one or two positive sizes (N or HxW)")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (tuple, list)) and len(value) not in (1, self.channels):
                fix = "give one value, or --channels 3 if the model takes RGB" if self.channels == 1 else "give 1 or 3"
                raise ValueError(f"{name} has {len(value)} values but the model takes {self.channels} channel(s): {fix}")
        if self.resize_to is not None and min(self.resize_to) < max(self.height, self.width) and (
            len(self.resize_to) == 1 or self.resize_to[0] < self.height or self.resize_to[1] < self.width
        ):
            shown = "x".join(str(v) for v in self.resize_to)
            raise ValueError(
                f"resize {shown} is smaller than the input size {self.height}x{self.width}: the center crop needs at "
                f"least the input size (e.g. --resize {max(self.height, self.width) * 8 // 7} for --input-size "
                f"{self.height}x{self.width})"
            )

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def preprocessed(self) -> bool:
        return self.source == PREPROCESSED

    def is_default_normalisation(self) -> bool:
        """Fashion-MNIST's own statistics (what SmallCNN is trained with)."""
        return per_channel(self.mean) == (FASHION_MNIST_MEAN,) and per_channel(self.std) == (FASHION_MNIST_STD,)

    def with_source(self, source: str) -> Preprocessing:
        fields = asdict(self)
        fields["source"] = source
        return Preprocessing(**fields)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Stored images (any of the module's three forms) → float32 ``(N, C, H, W)``."""
        if images.is_floating_point():
            expected = (self.channels, self.height, self.width)
            if tuple(images.shape[1:]) != expected:
                raise DataError(
                    f"preprocessed inputs have shape {list(images.shape[1:])} per item, the model takes {list(expected)}: "
                    "make the data match, or set --input-size / --channels to what the model takes"
                )
            return images.to(torch.float32).contiguous()
        x = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        x = x.to(torch.float32) * self.scale
        if x.shape[-2:] != (self.height, self.width):
            x = F.interpolate(x, size=self.resize_to or (self.height, self.width), mode=self.resize, align_corners=False)
            x = center_crop(x, self.height, self.width)
        if x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise DataError(
                    f"the images have {x.shape[1]} channels, the model takes {self.channels}: convert them "
                    "(an image folder is converted for you), or set --channels to what the model takes"
                )
            x = x.expand(-1, self.channels, -1, -1)
        mean = torch.tensor(per_channel(self.mean), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(per_channel(self.std), dtype=torch.float32).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()

    def to_manifest(self) -> dict[str, Any]:
        if self.preprocessed:
            steps = ["none: the model takes the inputs exactly as the user's data holds them"]
        else:
            size = (
                "resize to `resize_to` (one value: the shorter side, aspect kept), then center-crop to (height, width)"
                if self.resize_to
                else "resize to (height, width) when the image is another size"
            )
            steps = [
                f"{size}, with Pillow's bilinear filter on the uint8 image (torchvision's Resize on a PIL image)",
                "x = image.astype(float32) * scale, layout NCHW",
                "a grey image is repeated to `channels` channels",
                "x[:, c] = (x[:, c] - mean[c]) / std[c] (one value: the same for every channel)",
            ]
            if self.source == GREY_28:
                steps = [
                    "x = image.astype(float32) * scale",
                    "resize to (height, width) with `resize` interpolation if not 28x28",
                    "repeat the grey channel `channels` times; layout NCHW",
                    "x[:, c] = (x[:, c] - mean[c]) / std[c] (one value: the same for every channel)",
                ]
        record = asdict(self)
        record["resize_to"] = list(self.resize_to) if self.resize_to else None
        return {**record, "steps": steps}


def per_channel(value: float | tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else (float(value),)


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central ``height × width`` of an ``(N, C, H, W)`` batch (torchvision's CenterCrop rounding)."""
    top = round((x.shape[-2] - height) / 2.0)
    left = round((x.shape[-1] - width) / 2.0)
    return x[..., top : top + height, left : left + width]
