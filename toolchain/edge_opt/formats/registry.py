"""The registry of artifact formats: the one list ``--format all``, the config's ``formats``, the pick, the sweep,
the manifest and the manifest's ``versions`` derive from.

A new format is one module in this package (a :class:`~edge_opt.formats.base.Format` subclass and its instance)
plus its line in :data:`FORMATS`; its model file and runtime are the wire contract's (``edge_agent.contract.formats``).
"""

from __future__ import annotations

import enum

from edge_opt.formats.base import Format
from edge_opt.formats.executorch import EXECUTORCH
from edge_opt.formats.litert import LITERT
from edge_opt.formats.onnx import ONNX
from edge_opt.formats.torchscript import TORCHSCRIPT

#: Every format the toolchain builds, in the order tables, ``--format all`` and error messages list them.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        TORCHSCRIPT,
        ONNX,
        EXECUTORCH,
        LITERT,
    )
}

#: The formats as the config validates them (``--format``, ``formats:``): one member per registered format.
ArtifactFormat = enum.StrEnum("ArtifactFormat", [(name.upper(), name) for name in FORMATS])  # type: ignore[misc]


def get_format(name: str) -> Format:
    """The format called ``name``.

    Raises:
        KeyError: no such format; the message lists the known ones.
    """
    try:
        return FORMATS[str(name)]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; expected one of {', '.join(FORMATS)}") from None


def all_formats() -> tuple[str, ...]:
    """Every format's name (``--format all``)."""
    return tuple(FORMATS)


def default_formats() -> tuple[str, ...]:
    """The default formats' names (the config's default, ``--format both``)."""
    return tuple(name for name, f in FORMATS.items() if f.default)


def distributions() -> tuple[str, ...]:
    """The distributions whose versions the formats' artifacts depend on, in registry order, once each."""
    return tuple(dict.fromkeys(d for f in FORMATS.values() for d in f.distributions))
