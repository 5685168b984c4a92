"""Models the toolchain can build: the reference SmallCNN, torchvision architectures by name, and a user's own.

A :class:`ModelSpec` pairs the ``nn.Module`` with the preprocessing its input needs, so every later step (training,
calibration, export, the manifest) agrees on the input shape.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_opt.data import Preprocessing
from edge_opt.data.preprocessing import GREY_28
from edge_opt.errors import ModelError

#: torchvision classification architectures that are known to quantize and export here.
TORCHVISION_MODELS: tuple[str, ...] = ("mobilenet_v2", "resnet18", "resnet50", "mobilenet_v3_large", "shufflenet_v2_x1_0")


class SmallCNN(nn.Module):
    """The reference guide's SmallCNN for 28×28 grey images: 712,202 parameters, 2.85 MB in FP32.

    conv(1→16, 3×3) + ReLU + max-pool, conv(16→32, 3×3) + ReLU + max-pool, linear(1568→448) + ReLU, linear(448→10).
    """

    def __init__(self, num_classes: int = 10, channels: tuple[int, int] = (16, 32), hidden: int = 448) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class ModelSpec:
    name: str
    module: nn.Module
    preprocessing: Preprocessing
    #: True when the weights are random (no checkpoint, not trained): accuracy figures mean nothing.
    random_init: bool
    #: The output of one item (``(classes,)`` for a classifier; ``(C, H, W)`` for a feature map, ...).
    output_shape: tuple[int, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        p = self.preprocessing
        return (p.channels, p.height, p.width)

    @property
    def classifier(self) -> bool:
        """One row of class scores per item: top-1 / top-5 mean something (with labels)."""
        return len(self.output_shape) == 1 and self.output_shape[0] >= 2

    @property
    def num_outputs(self) -> int:
        return int(torch.Size(self.output_shape).numel())


def build_model(
    name: str,
    *,
    num_classes: int | None = 10,
    input_size: tuple[int, int] | None = None,
    checkpoint: Path | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resize_to: tuple[int, ...] | None = None,
    source: str = GREY_28,
) -> ModelSpec:
    """Build a model by name and load ``checkpoint`` (a state_dict) when given.

    ``channels`` (1 or 3) is what the model takes (None: SmallCNN 1, torchvision 3, a factory's model probed);
    ``mean`` and ``std`` normalise its input (None: Fashion-MNIST's statistics for Fashion-MNIST, else none:
    scaled to [0, 1] only); ``resize_to`` and ``source`` describe the data's preprocessing
    (:class:`~edge_opt.data.Preprocessing`). ``num_classes`` None: what a factory's model gives, 10 otherwise.

    Raises:
        ModelError: unknown name, a factory that cannot be imported, or weights that do not fit.
    """
    height, width = input_size or (28, 28)
    if name == "smallcnn":
        if (height, width) != (28, 28):
            raise ModelError("smallcnn takes 28x28 inputs only; drop --input-size or pick another model")
        if channels not in (None, 1):
            raise ModelError("smallcnn takes 1-channel (grey) inputs; drop --channels or pick another model")
        module: nn.Module = SmallCNN(num_classes or 10)
        channels = 1
    elif ":" in name:
        module, channels = _from_factory(name, num_classes, (height, width), channels)
    else:
        if channels not in (None, 3):
            raise ModelError(f"torchvision's {name} takes 3-channel inputs (the grey image repeated); drop --channels")
        module = _from_torchvision(name, num_classes or 10)
        channels = 3
    normalisation: dict[str, Any] = {}
    if source != GREY_28:  # the user's images: no normalisation unless given (torchvision's ToTensor alone)
        normalisation = {"mean": 0.0, "std": 1.0}
    for key, value in (("mean", mean), ("std", std)):
        if value is not None:
            normalisation[key] = float(value[0]) if len(value) == 1 else tuple(float(v) for v in value)
    try:
        resize = tuple(resize_to) if resize_to else None
        preprocessing = Preprocessing(height, width, channels, resize_to=resize, source=source, **normalisation)
    except ValueError as exc:
        raise ModelError(f"{name}: {exc}") from None
    spec = ModelSpec(name, module, preprocessing, checkpoint is None)
    if checkpoint is not None:
        load_weights(spec.module, checkpoint)
    spec.module.eval()
    spec.output_shape = _output_shape(spec)
    return spec


def _output_shape(spec: ModelSpec) -> tuple[int, ...]:
    with torch.no_grad():
        out = spec.module(torch.zeros(2, *spec.input_shape))
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != 2:
        raise ModelError(
            f"{spec.name} returns {type(out).__name__ if not isinstance(out, torch.Tensor) else list(out.shape)} for a "
            "batch of 2: edge-opt exports models with one tensor output whose first dimension is the batch"
        )
    return tuple(int(d) for d in out.shape[1:])


def _from_torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision

    available = set(torchvision.models.list_models(module=torchvision.models))
    if name not in available:
        shown = ", ".join(("smallcnn", *TORCHVISION_MODELS))
        raise ModelError(f"unknown model {name!r}; use one of {shown}, another torchvision name, or package.module:factory")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _from_factory(spec: str, num_classes: int | None, size: tuple[int, int], channels: int | None) -> tuple[nn.Module, int]:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import model factory {spec!r} ({exc}); check the module is on PYTHONPATH") from None
    try:
        module = factory() if num_classes is None else factory(num_classes=num_classes)
    except TypeError:
        module = factory()
    if not isinstance(module, nn.Module):
        raise ModelError(
            f"model factory {spec!r} returned {type(module).__name__}, not a torch.nn.Module; make it return the model"
        )
    module.eval()
    # Grey first: Fashion-MNIST is grey; many user models expect RGB.
    for candidate in (channels,) if channels else (1, 3):
        try:
            with torch.no_grad():
                out = module(torch.zeros(1, candidate, *size))
        except RuntimeError:
            continue
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            continue
        if num_classes is not None and out.ndim == 2 and out.shape[1] != num_classes:
            raise ModelError(
                f"model from {spec!r} gives {out.shape[1]} outputs per item, the data has {num_classes} classes: "
                "make the model's classes match the data's (or set --num-classes)"
            )
        return module, candidate
    shown = channels or "1 or 3"
    raise ModelError(
        f"model from {spec!r} does not take a (1, {shown}, {size[0]}, {size[1]}) input and return a tensor; "
        "set --input-size / --channels to what it expects"
    )


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a state_dict (or a dict holding one under ``state_dict``) into ``module``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"checkpoint {path} does not exist; pass --checkpoint with a saved state_dict") from None
    except Exception as exc:
        raise ModelError(
            f"cannot read checkpoint {path} ({type(exc).__name__}): save it with torch.save(model.state_dict())"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        # torch's first line names neither the keys nor the shapes: say which, and what usually causes it.
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        shown = "; ".join(details)[:400] or "keys or shapes differ"
        raise ModelError(
            f"checkpoint {path} does not fit this model ({shown}): was it saved from this model? check --model, "
            "--channels, --input-size and the number of classes"
        ) from None


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, batches: list[torch.Tensor]) -> bool:
    """Re-estimate BatchNorm running statistics on real data (train mode, no gradients).

    A random-init torchvision model has BatchNorm statistics that make its logits degenerate (about 1e-9 for
    MobileNetV2), so parity checks on it would prove nothing. Returns True if the model has BatchNorm layers.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches given
    module.train()
    for x in batches:
        module(x)
    module.eval()
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    return True


def parameter_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())
