"""Pruning: structured channel pruning that physically shrinks layers, or unstructured magnitude pruning.

* ``structured`` removes whole output channels / neurons by L2 magnitude, the same fraction from every prunable
  layer, and rewires every dependent layer (the next convolution's inputs, the Flatten→Linear fan-in, BatchNorm,
  residual adds). Dependency tracking is Torch-Pruning's (``torch_pruning.MetaPruner``): it traces the graph, so it
  handles torchvision architectures and user models alike, and works with torch 2.14. The model gets smaller on
  disk and faster. The classifier's output layer is never pruned (it must keep one output per class).
* ``unstructured`` zeroes the smallest-magnitude weights across all conv / linear layers (``torch.nn.utils.prune``,
  global L1) and makes it permanent. Shapes do not change, so files do not shrink unless compressed; it is here for
  comparison and for sparse runtimes.

Both are followed by a short fine-tune on the training split that recovers most of the accuracy.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_opt.config import PruneMethod
from edge_opt.errors import ModelError


def output_layer(model: nn.Module) -> nn.Module | None:
    """The last Linear (or 1x1 classifier Conv) of the model: its outputs are the classes, never pruned."""
    last = None
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            last = module
    return last


def prune_structured(model: nn.Module, example: torch.Tensor, amount: float) -> nn.Module:
    """Remove ``amount`` of the channels of every prunable layer, in place; returns the model.

    Raises:
        ModelError: Torch-Pruning cannot trace the model or the amount is out of range.
    """
    import torch_pruning as tp

    if not 0.0 < amount < 1.0:
        raise ModelError(f"pruning amount must be between 0 and 1 (exclusive), got {amount}")
    ignored = [m for m in (output_layer(model),) if m is not None]
    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=amount,
            ignored_layers=ignored,
            round_to=None,
        )
        pruner.step()
    except Exception as exc:  # Torch-Pruning raises a variety of errors on untraceable models
        raise ModelError(
            f"structured pruning cannot trace this model ({type(exc).__name__}: {exc}); "
            "use --prune-method unstructured, or no --prune"
        ) from None
    return model


def prune_unstructured(model: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` smallest-magnitude weights across all conv / linear layers, permanently."""
    from torch.nn.utils import prune

    if not 0.0 < amount < 1.0:
        raise ModelError(f"pruning amount must be between 0 and 1 (exclusive), got {amount}")
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in params:
        prune.remove(module, name)  # make it permanent: plain weights with zeros, no masks or hooks
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights in conv / linear layers."""
    total = zeros = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            total += m.weight.numel()
            zeros += int((m.weight == 0).sum())
    return zeros / total if total else 0.0


def prune(model: nn.Module, example: torch.Tensor, amount: float, method: PruneMethod) -> nn.Module:
    if method is PruneMethod.STRUCTURED:
        return prune_structured(model, example, amount)
    return prune_unstructured(model, amount)
