"""The format interface every artifact format implements, and what its builds return.

A format plugin is one module in this package holding one :class:`Format` subclass and its instance; the registry
(:mod:`edge_opt.formats.registry`) lists the instances. A format:

* builds its model file for a precision from the prepared export (:meth:`Format.build`), returning a :class:`Built`:
  the runner that loads the file back with the format's own runtime, the logits of the model the file must reproduce
  (the parity gate's reference), the relation (``same``: the same computation; ``quantized``: a quantization of
  the FP32 model) and the quantization record for the manifest;
* loads a model file back for parity checks and evaluation (:meth:`Format.load`);
* says how its INT8 artifacts are evaluated on a host that is not their target, and what the manifest records
  about it (:meth:`Format.semantics_runner`, :meth:`Format.evaluation_how`);
* names the distributions whose versions shaped its artifacts (the manifest's ``versions``);
* builds the INT8 artifact from a quantization-aware trained model (:meth:`Format.build_qat`).

The model file's name, its runtime and the device's name for that runtime are the wire contract's
(``edge_agent.contract.formats``), shared with the agent.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from edge_agent.contract.formats import MODEL_FORMATS, ModelFormat

from edge_opt.formats.evaluation import HOST_KERNELS, REFERENCE_SEMANTICS, Runner
from edge_opt.options import Precision

if TYPE_CHECKING:  # the export context is built above this layer; a format only reads it
    from torch import nn

    from edge_opt.export.prepare import ExportContext

#: The two families of quantization-aware training a format builds from (:mod:`edge_opt.quant.qat`).
FX, PT2E = "fx", "pt2e"


@dataclass
class Built:
    """A model file written by a format, and what it must be checked against."""

    runner: Runner
    source_logits: np.ndarray
    relation: str  # "same" | "quantized"
    quantization: dict[str, Any] | None = None


class Format(ABC):
    """An artifact format as the toolchain builds and checks it."""

    #: The format's name: ``--format``, the config's ``formats``, the manifest's ``format``, the folder suffix.
    name: ClassVar[str]
    #: Part of the default formats (the config's default and ``--format both``).
    default: ClassVar[bool] = False
    #: Distributions (besides edge-opt, torch, torchvision, numpy) whose versions shape its artifacts.
    distributions: ClassVar[tuple[str, ...]] = ()
    #: The quantization-aware training family its INT8 artifact is built from (:data:`FX` or :data:`PT2E`).
    qat_family: ClassVar[str] = FX
    #: False: its INT8 artifacts are always evaluated with this host's kernels (no semantics-only path).
    evaluates_semantics: ClassVar[bool] = True
    #: Its colour in the sweep's plot.
    color: ClassVar[str] = "gray"

    @property
    def model(self) -> ModelFormat:
        """The model file and runtime, as both sides of the wire know them."""
        return MODEL_FORMATS[self.name]

    @property
    def suffix(self) -> str:
        return self.model.suffix

    @property
    def runtime(self) -> str:
        return self.model.runtime

    @abstractmethod
    def build(self, ctx: ExportContext, precision: Precision, path: Path) -> Built:
        """Write the model file of ``precision`` at ``path`` and load it back.

        Raises:
            ExportError: the export or the lowering failed (the artifact is refused, with the fix).
        """

    @abstractmethod
    def load(self, path: Path, precision: Precision, *, engine: str | None = None, threads: int = 0) -> Runner:
        """The model file at ``path`` in the format's runtime (``engine``: the quantized engine INT8 kernels need)."""

    def evaluation_mode(self, mode: str) -> str:
        """The evaluation mode an artifact of this format gets, given the one its target asks for."""
        return mode if self.evaluates_semantics else HOST_KERNELS

    def semantics_runner(self, path: Path) -> Runner | None:
        """A runner executing the model's arithmetic as written, when it differs from :meth:`load`'s; else None."""
        return None

    def evaluation_how(self, mode: str, torch_engine: str) -> str:
        """The manifest's ``host_metrics.evaluation.how``: how accuracy and parity were computed."""
        if mode != REFERENCE_SEMANTICS:
            return "this host's kernels (it is the artifact's target, or the artifact is not quantized)"
        return self.semantics_how(torch_engine)

    def semantics_how(self, torch_engine: str) -> str:
        """How the model's semantics are executed on this host (reference-semantics mode)."""
        return f"torch quantized engine {torch_engine!r} (the target's), integer kernels"

    def build_qat(self, ctx: ExportContext, model: nn.Module, record: dict[str, Any], path: Path) -> Built:
        """The INT8 artifact built like the PTQ one, from the quantization-aware trained ``model``."""
        with _as_int8_model(ctx, self.qat_family, model):
            built = self.build(ctx, Precision.INT8, path)
        built.quantization = dict(record)
        return built

    def reloaded(self, built: Built, path: Path) -> Runner:
        """The runner for a copy of the built file at ``path`` (the same bytes)."""
        return built.runner


@contextlib.contextmanager
def _as_int8_model(ctx: ExportContext, family: str, model: nn.Module) -> Iterator[None]:
    """Let the format's own build start from the QAT model instead of its PTQ model."""
    attr = "int8_model" if family == FX else "pt2e_model"
    previous = getattr(ctx, attr)
    setattr(ctx, attr, model)
    try:
        yield
    finally:
        setattr(ctx, attr, previous)
