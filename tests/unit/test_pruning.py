from __future__ import annotations

import pytest
import torch
from edge_opt.config import PruneMethod
from edge_opt.errors import ModelError
from edge_opt.model.models import SmallCNN, build_model, parameter_bytes
from edge_opt.model.pruning import prune, sparsity

pytestmark = pytest.mark.unit


def test_structured_pruning_shrinks_layers_and_keeps_the_graph_consistent() -> None:
    model = SmallCNN().eval()
    before = parameter_bytes(model)
    prune(model, torch.randn(1, 1, 28, 28), 0.5, PruneMethod.STRUCTURED)
    conv1, conv2 = model.features[0], model.features[3]
    fc1, fc2 = model.classifier[1], model.classifier[3]
    assert (conv1.out_channels, conv2.in_channels, conv2.out_channels) == (8, 8, 16)
    assert (fc1.in_features, fc1.out_features, fc2.in_features, fc2.out_features) == (16 * 7 * 7, 224, 224, 10)
    assert parameter_bytes(model) < 0.3 * before
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_structured_pruning_of_a_torchvision_model() -> None:
    model = build_model("mobilenet_v2", input_size=(32, 32)).module
    before = parameter_bytes(model)
    prune(model, torch.randn(1, 3, 32, 32), 0.5, PruneMethod.STRUCTURED)
    assert parameter_bytes(model) < 0.4 * before
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unstructured_pruning_zeroes_weights_permanently() -> None:
    model = SmallCNN().eval()
    prune(model, torch.randn(1, 1, 28, 28), 0.5, PruneMethod.UNSTRUCTURED)
    assert sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())  # no masks left behind
    assert model.features[0].weight.shape == (16, 1, 3, 3)


@pytest.mark.parametrize("amount", [0.0, 1.0, -0.1])
def test_amount_out_of_range(amount: float) -> None:
    with pytest.raises(ModelError, match="between 0 and 1"):
        prune(SmallCNN(), torch.randn(1, 1, 28, 28), amount, PruneMethod.STRUCTURED)
