"""The artifact formats both sides of the wire know, in one table: the model file's name in an artifact folder,
the runtime that runs it (the manifest's ``runtime``, a benchmark's runtime setting) and the name device info lists
that runtime under. A new format is one line here, a builder in the toolchain (``edge_opt.builders``) and a runner
in the worker."""

from __future__ import annotations

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

    @property
    def suffix(self) -> str:
        return PurePath(self.file_name).suffix


MODEL_FORMATS: dict[str, ModelFormat] = {
    f.name: f
    for f in (
        ModelFormat("onnx", "model.onnx", "onnxruntime", "onnxruntime"),
        ModelFormat("torchscript", "model.pt", "torchscript", "torch"),
        ModelFormat("executorch", "model.pte", "executorch", "executorch"),
    )
}
