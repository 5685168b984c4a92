"""FP16 and INT8 (FX graph-mode post-training quantization) of PyTorch models.

The names follow the reference guide: ``to_fp16(model)`` and ``to_int8(model, calibration_loader,
calibration_batches=8, backend=...)``. The backend (PyTorch's quantized engine) comes from the target profile:
``x86`` on x86-64, ``qnnpack`` on arm64 (see :mod:`edge_opt.targets`).

FX quantization (``torch.ao.quantization``) is deprecated in favour of PT2E (``torchao``); it still works in torch
2.14 and users ask for it. It sits behind :func:`to_int8`, the one function a PT2E path would also implement.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from edge_opt import progress
from edge_opt.errors import ConfigError, QuantizeError
from edge_opt.options import FxObserver
from edge_opt.quiet import known_warnings_silenced


def to_fp16(model: nn.Module) -> nn.Module:
    """A half-precision copy of ``model`` in eval mode; ``model`` itself is untouched.

    FP16 models take FP16 inputs: :class:`edge_opt.formats.evaluation.TorchRunner` (dtype float16) casts them.
    """
    return copy.deepcopy(model).half().eval()


def available_backends() -> list[str]:
    """The quantized engines this torch build offers (``none`` excluded)."""
    return [e for e in torch.backends.quantized.supported_engines if e != "none"]


def check_backend(backend: str) -> None:
    """Raises QuantizeError naming the engines this torch build has when ``backend`` is not one of them."""
    have = available_backends()
    if backend not in have:
        raise QuantizeError(
            f"quantized backend {backend!r} is not available in this torch build; it offers {', '.join(have)} "
            "(pick another --target, or install a torch build with that backend)"
        )


@contextlib.contextmanager
def quantized_engine(backend: str) -> Iterator[None]:
    """Run the block with ``torch.backends.quantized.engine`` set to ``backend`` (restored afterwards)."""
    check_backend(backend)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = backend
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def check_keep_float(model: nn.Module, names: Sequence[str]) -> None:
    """Raise ConfigError for a ``--keep-float`` name that is not a layer of ``model``, listing the layers it has."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules or not n]
    if unknown:
        layers = [n for n, m in modules.items() if n and isinstance(m, nn.Conv2d | nn.Linear | nn.Conv1d | nn.Conv3d)]
        shown = ", ".join(layers[:40]) + (" ..." if len(layers) > 40 else "")
        raise ConfigError(
            f"--keep-float {', '.join(repr(n) for n in unknown)}: no such layer in the model; its conv / linear layers "
            f"are: {shown}"
        )


def qconfig_mapping(backend: str, observer: FxObserver = FxObserver.DEFAULT, keep_float: Sequence[str] = ()) -> Any:
    """The backend's default FX qconfig mapping, with another activation observer and float modules if asked."""
    from torch.ao.quantization import (
        HistogramObserver,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        QConfig,
        get_default_qconfig,
        get_default_qconfig_mapping,
    )

    mapping = get_default_qconfig_mapping(backend)
    if observer is not FxObserver.DEFAULT:
        default = get_default_qconfig(backend)
        # x86/fbgemm qconfigs use 7-bit activations (reduce_range) to avoid overflow in their kernels; keep that.
        reduce_range = backend in ("x86", "fbgemm")
        observer_cls: Any = {
            FxObserver.MINMAX: MinMaxObserver,
            FxObserver.MOVING_AVERAGE: MovingAverageMinMaxObserver,
            FxObserver.HISTOGRAM: HistogramObserver,
        }[observer]
        activation = observer_cls.with_args(dtype=torch.quint8, reduce_range=reduce_range)
        mapping = mapping.set_global(QConfig(activation=activation, weight=default.weight))
    for name in keep_float:
        mapping = mapping.set_module_name(name, None)
    return mapping


def _inputs(batch: Any) -> torch.Tensor:
    """A calibration batch may be ``inputs`` or ``(inputs, labels)``."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise QuantizeError(f"calibration batches must be tensors or (inputs, labels) pairs, got {type(batch).__name__}")
    return batch


def to_int8(
    model: nn.Module,
    calibration_loader: Iterable[Any],
    calibration_batches: int = 8,
    backend: str = "x86",
    *,
    observer: FxObserver = FxObserver.DEFAULT,
    keep_float: Sequence[str] = (),
) -> torch.fx.GraphModule:
    """Post-training INT8 quantization in FX graph mode, calibrated on real batches.

    Steps: a copy of ``model`` in eval mode; the backend's qconfig mapping; ``prepare_fx`` with example inputs
    (observers inserted); exactly ``calibration_batches`` forward passes; ``convert_fx``.

    Args:
        model: an FP32 model; it is not modified.
        calibration_loader: yields input tensors or ``(inputs, labels)`` pairs; the first batch is also the
            example input for tracing.
        calibration_batches: how many batches to calibrate on (the guide's default 8; 16–32 for production).
        backend: PyTorch quantized engine: ``x86``/``fbgemm`` (x86-64) or ``qnnpack`` (ARM).
        observer: activation observer; ``default`` keeps the backend's own qconfig.
        keep_float: module names left in float (qconfig None), for layers that quantize badly.

    Raises:
        QuantizeError: unknown backend, too few calibration batches, or a model FX cannot trace.
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    check_keep_float(model, keep_float)
    if calibration_batches < 1:
        raise QuantizeError(f"calibration_batches must be at least 1, got {calibration_batches}")
    check_backend(backend)
    iterator = iter(calibration_loader)
    try:
        first = _inputs(next(iterator))
    except StopIteration:
        raise QuantizeError("the calibration loader yielded no batches; give it training data") from None

    source = copy.deepcopy(model).float().eval()
    with quantized_engine(backend), known_warnings_silenced(), torch.no_grad():
        try:
            prepared = prepare_fx(source, qconfig_mapping(backend, observer, keep_float), example_inputs=(first,))
        except Exception as exc:  # FX tracing fails on data-dependent control flow
            raise QuantizeError(f"FX cannot trace this model ({type(exc).__name__}: {exc}); it needs a static graph") from None

        def batches() -> Iterator[torch.Tensor]:
            yield first
            for batch in iterator:
                yield _inputs(batch)

        done = 0
        for x in progress.track(batches(), "calibrating", calibration_batches):
            prepared(x)
            done += 1
            if done == calibration_batches:
                break
        if done < calibration_batches:
            raise QuantizeError(
                f"asked for {calibration_batches} calibration batches but the data gave only {done}; "
                "lower --calibration-batches or the batch size"
            )
        return convert_fx(prepared)
