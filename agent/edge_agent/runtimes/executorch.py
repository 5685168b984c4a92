"""ExecuTorch programs (``model.pte``, XNNPACK delegate): a FlatBuffer identifier check in the store, the
program loaded by :mod:`edge_agent.runtimes.executorch_program` in the worker with the run's threads."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

from edge_agent.contract.errors import ArtifactRejected
from edge_agent.runtimes.base import Opened, Runtime, RuntimeInfo, WorkerError, in_slices
from edge_agent.runtimes.executorch_program import ExecutorchLoadError, load

#: An ExecuTorch program is a FlatBuffer whose file identifier, at bytes 4..8, is "ET" and two digits (the schema).
PTE_IDENTIFIER = re.compile(rb"^ET[0-9]{2}$")


def memory_budget(limit: int) -> int:
    """What a program may plan: the worker's memory limit when set, else the device's physical memory."""
    if limit > 0:
        return limit
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


class ExecutorchRuntime(Runtime):
    format_name: ClassVar[str] = "executorch"
    module: ClassVar[str] = "executorch.runtime"

    def describe(self, version: str, details: dict[str, Any]) -> RuntimeInfo:
        # From the package metadata: the runtime imports torch, which costs seconds; its delegate is XNNPACK.
        return RuntimeInfo(self.device_name, version, providers=["XnnpackBackend"])

    def missing(self, worker_python: str) -> str:
        return (
            "an executorch artifact (.pte) needs the ExecuTorch runtime, which this device does not have: "
            "install edge-opt[agent,executorch] on it, or push the ONNX artifact"
        )

    def check_content(self, path: Path) -> None:
        with path.open("rb") as fh:
            if not PTE_IDENTIFIER.fullmatch(fh.read(8)[4:8]):
                raise ArtifactRejected("an executorch artifact must be an ExecuTorch program (.pte); this file is not")

    def prepare(self, model: bytes) -> None:
        import executorch.runtime  # noqa: F401 - before confinement (it imports torch, which reads its own files)

    def open(self, model: bytes, request: dict[str, Any]) -> Opened:
        """The pool gets ``threads`` (a fresh process: safe); a batch larger than planned is refused."""
        settings = request["settings"]
        try:
            budget = memory_budget(request.get("memory_limit_bytes") or 0)
            program = load(model, threads=settings["threads"], max_planned_bytes=budget)
        except ExecutorchLoadError as exc:
            raise WorkerError("MODEL_INVALID", str(exc)) from None
        planned = program.declared_shape[0] if program.declared_shape else 0
        if settings["batch_size"] > planned:
            raise WorkerError(
                "RUNTIME_ERROR",
                f"this ExecuTorch program is planned for batch {planned}; benchmark it with --batch-size {planned} or less",
            )
        declared = program.declared_shape
        return Opened(program.call, declared, program.dtype, program.version, evaluate=in_slices(program.call, declared[0]))


RUNTIME = ExecutorchRuntime()
