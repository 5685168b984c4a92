from __future__ import annotations

from pathlib import Path

import pytest
import torch
from edge_opt.data import Preprocessing, load_fashion_mnist
from edge_opt.errors import DataError, ModelError
from edge_opt.model.models import SmallCNN, build_model, parameter_bytes, recalibrate_batchnorm

pytestmark = pytest.mark.unit


def test_smallcnn_matches_reference_guide_sizes() -> None:
    model = SmallCNN()
    assert sum(p.numel() for p in model.parameters()) == 712_202
    assert parameter_bytes(model) == 2_848_808  # the guide's "FP32 2.85 MB"
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_by_name_takes_three_channels() -> None:
    spec = build_model("resnet18", input_size=(32, 32))
    assert spec.input_shape == (3, 32, 32) and spec.random_init
    assert spec.module(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_user_factory_and_errors(tmp_path: Path) -> None:
    spec = build_model("edge_test_models:tiny")
    assert spec.input_shape == (1, 28, 28)
    with pytest.raises(ModelError, match=r"not a torch\.nn\.Module"):
        build_model("edge_test_models:not_a_model")
    with pytest.raises(ModelError, match="cannot import"):
        build_model("no_such_module:f")
    with pytest.raises(ModelError, match="unknown model 'resnet9000'"):
        build_model("resnet9000")
    with pytest.raises(ModelError, match="28x28"):
        build_model("smallcnn", input_size=(64, 64))


def test_checkpoint_round_trip_and_mismatch(tmp_path: Path) -> None:
    model = SmallCNN()
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = build_model("smallcnn", checkpoint=path)
    assert not loaded.random_init
    assert torch.equal(loaded.module.classifier[3].weight, model.classifier[3].weight)
    torch.save(SmallCNN(hidden=64).state_dict(), path)
    with pytest.raises(ModelError, match="does not fit"):
        build_model("smallcnn", checkpoint=path)
    with pytest.raises(ModelError, match="does not exist"):
        build_model("smallcnn", checkpoint=tmp_path / "missing.pt")


def test_batchnorm_recalibration_changes_stats() -> None:
    spec = build_model("mobilenet_v2", input_size=(32, 32))
    bn = next(m for m in spec.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert recalibrate_batchnorm(spec.module, [torch.randn(8, 3, 32, 32) * 3 + 1])
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not spec.module.training


def test_preprocessing_resize_and_channels() -> None:
    images = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    x = Preprocessing(height=32, width=32, channels=3).apply(images)
    assert x.shape == (2, 3, 32, 32)
    assert torch.allclose(x, torch.full_like(x, (1.0 - 0.2860) / 0.3530), atol=1e-5)


def test_missing_dataset_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path, download=False)
    assert "--data-dir" in str(err.value) and "EDGE_OPT_DATA_DIR" in str(err.value)


def test_reads_real_fashion_mnist(data_root: Path) -> None:
    data = load_fashion_mnist(data_root, download=False)
    assert (len(data.train), len(data.test)) == (60_000, 10_000)
    assert data.train.images.dtype == torch.uint8 and data.test.labels.max() == 9
