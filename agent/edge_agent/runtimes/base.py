"""The runtime interface every runtime plugin implements, and what the worker gets back from one.

A runtime is used in four places, always through :mod:`edge_agent.runtimes.registry`:

* the store calls :meth:`Runtime.check_content` on a pushed model file before it becomes visible;
* the run manager resolves a run's runtime and asks the workers' interpreter whether it has it
  (:attr:`Runtime.module`, probed by :class:`edge_agent.runtimes.probe.RuntimeProbe`), refusing with
  :meth:`Runtime.missing` otherwise;
* device info lists each installed runtime as :meth:`Runtime.describe` says;
* the worker calls :meth:`Runtime.prepare` (imports, checks of the bytes) *before* it confines itself, and
  :meth:`Runtime.open` *after*, which returns an :class:`Opened` model to time and evaluate.

Runtime packages are imported inside ``prepare`` / ``open`` only: the agent process never imports them.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edge_agent.contract.formats import MODEL_FORMATS, ModelFormat


class WorkerError(Exception):
    """A run's failure a runtime names (``code``: MODEL_INVALID, RUNTIME_ERROR, OOM); the worker reports it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RuntimeInfo:
    """A runtime as device info lists it."""

    name: str
    version: str
    providers: list[str] = field(default_factory=list)
    quantized_engines: list[str] = field(default_factory=list)


@dataclass
class Opened:
    """A model opened by its runtime: the timed ``call``, the ``evaluate`` call (the timed one unless the runtime
    needs batches sliced), the declared input shape (batch first), its dtype and the runtime's version."""

    call: Callable[[Any], Any]
    declared: list[Any]
    dtype: str
    version: str
    evaluate: Callable[[Any], Any] | None = None


class Runtime(ABC):
    """One runtime: the format it runs, how to check, prepare and open a model file of it."""

    #: The artifact format it runs (an entry of :data:`edge_agent.contract.formats.MODEL_FORMATS`).
    format_name: ClassVar[str]
    #: The module whose presence in the workers' interpreter means the runtime is installed.
    module: ClassVar[str]
    #: Whether the ``graph_optimization`` benchmark setting applies to it.
    graph_optimization: ClassVar[bool] = False

    @property
    def format(self) -> ModelFormat:
        return MODEL_FORMATS[self.format_name]

    @property
    def name(self) -> str:
        """The runtime's name: the manifest's ``runtime``, the wire's ``RUNTIME_<NAME>``, the journal's."""
        return self.format.runtime

    @property
    def device_name(self) -> str:
        """The name device info lists it under (and the probe reports it by)."""
        return self.format.device_runtime

    def available(self) -> bool:
        """Whether this interpreter can import the runtime (the host's side; the device asks its workers' one)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def describe(self, version: str, details: dict[str, Any]) -> RuntimeInfo:
        """Device info's entry for the runtime, from the probe's ``version`` and its runtime-specific ``details``."""
        return RuntimeInfo(self.device_name, version)

    @abstractmethod
    def missing(self, worker_python: str) -> str:
        """Why a run of this runtime is refused when the workers' interpreter lacks it (the fix included)."""

    @abstractmethod
    def check_content(self, path: Path) -> None:
        """Refuse a pushed file that is not a model of this format (raises ``ArtifactRejected``)."""

    @abstractmethod
    def prepare(self, model: bytes) -> None:
        """In the worker, before confinement: import the runtime (it reads its own files), re-check the bytes."""

    @abstractmethod
    def open(self, model: bytes, request: dict[str, Any]) -> Opened:
        """In the worker, after confinement: load ``model`` from bytes with the run's settings."""


def fixed_batches(call: Callable[[Any], Any], batch: int) -> Callable[[Any], Any]:
    """``call`` for a model that takes exactly ``batch`` items (an ONNX file with a fixed batch), over any number of
    items: ``batch`` at a time, the last slice padded with zeros and the padding's outputs dropped."""
    import numpy as np  # numpy is imported where arrays are made (the agent's import stays light)

    def sliced(x: Any) -> Any:
        outputs = []
        for start in range(0, len(x), batch):
            part = x[start : start + batch]
            items = len(part)
            if items < batch:
                part = np.concatenate([part, np.zeros((batch - items, *part.shape[1:]), part.dtype)])
            outputs.append(np.asarray(call(np.ascontiguousarray(part)))[:items])
        return np.concatenate(outputs)

    return sliced


def in_slices(call: Callable[[Any], Any], planned: int) -> Callable[[Any], Any]:
    """``call`` over a batch larger than the program is planned for, one planned batch at a time (the evaluation)."""
    import numpy as np  # as above

    def sliced(x: Any) -> Any:
        return np.concatenate([call(np.ascontiguousarray(x[i : i + planned])) for i in range(0, len(x), planned)])

    return sliced
