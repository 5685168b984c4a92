"""TorchScript artifacts (``model.pt``) with torch, when a device happens to have it: a zip archive in the store,
``torch.jit.load`` from bytes in the worker, with the quantized engine the artifact was built for."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

from edge_agent.contract.errors import ArtifactRejected
from edge_agent.runtimes.base import Opened, Runtime, RuntimeInfo, WorkerError

#: A TorchScript file is a zip archive: its first bytes are a local file header.
ZIP_MAGIC = b"PK\x03\x04"


class TorchScriptRuntime(Runtime):
    format_name: ClassVar[str] = "torchscript"
    module: ClassVar[str] = "torch"

    def describe(self, version: str, details: dict[str, Any]) -> RuntimeInfo:
        engines = list(details.get("quantized_engines") or [])
        return RuntimeInfo(self.device_name, version, quantized_engines=[e for e in engines if e != "none"])

    def missing(self, worker_python: str) -> str:
        return "TorchScript needs torch, which this device does not have; push the ONNX artifact"

    def check_content(self, path: Path) -> None:
        with path.open("rb") as fh:
            if fh.read(4) != ZIP_MAGIC:
                raise ArtifactRejected("a TorchScript artifact must be a TorchScript zip archive; this file is not")

    def prepare(self, model: bytes) -> None:
        import torch  # noqa: F401 - before confinement: it reads its own files at import

    def open(self, model: bytes, request: dict[str, Any]) -> Opened:
        import torch  # optional on a device: imported only by a TorchScript run

        torch.set_num_threads(request["settings"]["threads"])
        engine = request.get("torch_engine")
        if engine:
            if engine not in torch.backends.quantized.supported_engines:
                raise WorkerError("RUNTIME_ERROR", f"torch here lacks the quantized engine {engine!r} the artifact was built for")
            torch.backends.quantized.engine = engine
        try:
            module = torch.jit.load(io.BytesIO(model), map_location="cpu").eval()
        except Exception as exc:
            raise WorkerError("MODEL_INVALID", f"torch.jit.load failed: {str(exc).splitlines()[0][:300]}") from None
        dtype = request["input"].get("dtype", "float32")
        torch_dtype = torch.float16 if dtype == "float16" else torch.float32

        def call(x: Any) -> Any:
            with torch.inference_mode():
                return module(torch.from_numpy(x).to(torch_dtype)).float().numpy()

        return Opened(call, request["input"]["shape"], dtype, torch.__version__)


RUNTIME = TorchScriptRuntime()
