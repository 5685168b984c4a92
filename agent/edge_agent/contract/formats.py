"""The artifact formats both sides of the wire know, in one table: the model file's name in an artifact folder,
the runtime that runs it (the manifest's ``runtime``, a benchmark's runtime setting) and the name device info lists
that runtime under. A new format is one line here, a format module in the toolchain (``edge_opt.formats``, with its
line in ``edge_opt.formats.registry``) and a runtime module on the device (``edge_agent.runtimes``, with its line in
``edge_agent.runtimes.registry``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath


@dataclass(frozen=True)
class ModelFormat:
    name: str
    #: The model file in an artifact folder (``model.onnx``, ...).
    file_name: str
    #: The runtime that runs it: the manifest's ``runtime``, the benchmark setting's ``RUNTIME_<NAME>``.
    runtime: str
    #: The name under which device info lists that runtime (the TorchScript runtime is ``torch``).
    device_runtime: str
    #: What a device installs to get that runtime.
    device_install: str

    @property
    def suffix(self) -> str:
        return PurePath(self.file_name).suffix


MODEL_FORMATS: dict[str, ModelFormat] = {
    f.name: f
    for f in (
        ModelFormat("onnx", "model.onnx", "onnxruntime", "onnxruntime", "edge-opt[agent]"),
        ModelFormat("torchscript", "model.pt", "torchscript", "torch", "torch==2.14.1 beside edge-opt[agent]"),
        ModelFormat("executorch", "model.pte", "executorch", "executorch", "edge-opt[agent,executorch]"),
        ModelFormat("litert", "model.tflite", "litert", "ai-edge-litert", "edge-opt[agent]"),
    )
}


#: Evaluation sets (labelled inputs and the host's reference outputs, pushed like artifacts, named by a run): their
#: manifest's ``format`` and their file in an artifact folder. Not a model: no runtime runs them.
EVALSET_FORMAT = "evalset"
EVALSET_FILE = "evalset.npz"


def missing_runtime(format_name: str, device_runtimes: Iterable[str]) -> str | None:
    """Why a device listing ``device_runtimes`` (its device info's runtime names) cannot run ``format_name``, or None."""
    fmt = MODEL_FORMATS.get(format_name)
    if fmt is None:
        return f"no device runs artifacts of format {format_name!r} (known: {', '.join(MODEL_FORMATS)})"
    if fmt.device_runtime in set(device_runtimes):
        return None
    return f"the device has no {fmt.device_runtime} runtime for {fmt.name} artifacts: install {fmt.device_install} there"

