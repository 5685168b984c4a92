"""Silence the known warnings users cannot act on, narrowly, by message.

``prepare_fx`` on MobileNetV2 repeats the observer ``reduce_range`` warning almost 1,800 times; every
``torch.jit`` call and the legacy ONNX exporter announce their deprecation. The toolchain chose these APIs on
purpose (the user asked for FX INT8 and TorchScript), so the warnings are noise to the user. Anything not listed
here still shows. ``edge-export -v`` shows everything.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

#: (category, message regex) pairs; each matches one known, unactionable warning.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (UserWarning, r"Please use quant_min and quant_max to specify the range for observers"),
    (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor"),
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated"),
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, r"The feature will be removed\. Please remove usage of this function"),
    (Warning, r"Converting a tensor to a Python (float|integer|boolean) might cause the trace to be incorrect"),
    (UserWarning, r"Please consider to run pre-processing before quantization"),
)

_show_all = False


def show_all_warnings(enabled: bool) -> None:
    """``-v``: let every warning through."""
    global _show_all
    _show_all = enabled


def showing_all() -> bool:
    """True under ``-v``: nothing is hidden, native runtime logs included."""
    return _show_all


#: Loggers that announce, on importing torchao / executorch, a deprecation inside those packages.
KNOWN_NOISY_LOGGERS = ("torch.utils._pytree",)


def quiet_import_loggers() -> None:
    """Before importing torchao or executorch: hide their import-time deprecation log lines (unless ``-v``)."""
    import logging

    if not _show_all:
        for name in KNOWN_NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def known_warnings_silenced() -> Iterator[None]:
    """Within the block, drop the warnings in :data:`KNOWN_WARNINGS` (unless ``-v``)."""
    with warnings.catch_warnings():
        if not _show_all:
            for category, pattern in KNOWN_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=category)
        yield
