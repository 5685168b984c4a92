from __future__ import annotations

import pytest
import torch
from edge_opt.errors import QuantizeError
from edge_opt.model.models import SmallCNN
from edge_opt.options import FxObserver
from edge_opt.quant.fx import available_backends, quantized_engine, to_fp16, to_int8

pytestmark = pytest.mark.unit


def _is_quantized(module: torch.nn.Module) -> bool:
    return ".quantized." in type(module).__module__


def _batches(n: int, size: int = 4):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(size, 1, 28, 28, generator=gen) for _ in range(n)]


def test_to_fp16_copies_and_leaves_original() -> None:
    model = SmallCNN()
    half = to_fp16(model)
    assert next(half.parameters()).dtype == torch.float16 and not half.training
    assert next(model.parameters()).dtype == torch.float32


class CountingLoader:
    def __init__(self, batches):
        self.batches = batches
        self.served = 0

    def __iter__(self):
        for b in self.batches:
            self.served += 1
            yield (b, torch.zeros(len(b), dtype=torch.long))


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_to_int8_uses_exactly_n_batches(backend: str) -> None:
    model = SmallCNN().eval()
    loader = CountingLoader(_batches(10))
    q = to_int8(model, loader, calibration_batches=3, backend=backend)
    assert loader.served == 3
    assert _is_quantized(q.get_submodule("features.0")) and _is_quantized(q.get_submodule("classifier.3"))
    with quantized_engine(backend):
        out = q(_batches(1)[0])
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert next(model.parameters()).dtype == torch.float32  # source untouched


def test_per_channel_on_x86_per_tensor_on_qnnpack() -> None:
    model = SmallCNN().eval()
    x86 = to_int8(model, _batches(2), calibration_batches=2, backend="x86")
    qnn = to_int8(model, _batches(2), calibration_batches=2, backend="qnnpack")
    assert x86.get_submodule("features.0").weight().qscheme() == torch.per_channel_affine
    assert qnn.get_submodule("features.0").weight().qscheme() == torch.per_tensor_affine


def test_keep_float_and_observer() -> None:
    q = to_int8(SmallCNN().eval(), _batches(2), calibration_batches=2, observer=FxObserver.MINMAX, keep_float=("classifier.3",))
    assert type(q.get_submodule("classifier.3")) is torch.nn.Linear  # left in float
    assert _is_quantized(q.get_submodule("classifier.1"))


def test_unknown_backend_lists_available() -> None:
    with pytest.raises(QuantizeError) as err:
        to_int8(SmallCNN(), _batches(1), calibration_batches=1, backend="hexagon")
    for engine in available_backends():
        assert engine in str(err.value)


def test_too_few_batches() -> None:
    with pytest.raises(QuantizeError, match="only 2"):
        to_int8(SmallCNN(), _batches(2), calibration_batches=5)
    with pytest.raises(QuantizeError, match="no batches"):
        to_int8(SmallCNN(), [], calibration_batches=1)


def test_unknown_keep_float_name_is_an_error_naming_the_layers() -> None:
    from edge_opt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'classifier\.9'.*features\.0.*classifier\.3"):
        to_int8(SmallCNN().eval(), _batches(2), calibration_batches=2, keep_float=("classifier.9",))
