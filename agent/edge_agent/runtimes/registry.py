"""The runtime registry: the one list the store, the run manager, the worker and device info iterate.

A new runtime is a module in this package (a :class:`edge_agent.runtimes.base.Runtime`) and one line in
:data:`RUNTIMES`; its format's line in :data:`edge_agent.contract.formats.MODEL_FORMATS` is what both ends of the
wire (and a host without the runtime) know of it.
"""

from __future__ import annotations

from edge_agent.contract.errors import ArtifactRejected
from edge_agent.contract.formats import MODEL_FORMATS
from edge_agent.runtimes import executorch, litert, onnx, torchscript
from edge_agent.runtimes.base import Runtime

#: Every runtime, in device info's order.
RUNTIMES: tuple[Runtime, ...] = (
    onnx.RUNTIME,
    torchscript.RUNTIME,
    executorch.RUNTIME,
    litert.RUNTIME,
)

#: Artifact format → its runtime.
BY_FORMAT: dict[str, Runtime] = {r.format_name: r for r in RUNTIMES}
#: Runtime name (the manifest's ``runtime``) → the runtime.
BY_NAME: dict[str, Runtime] = {r.name: r for r in RUNTIMES}
#: The wire's runtime names (``RUNTIME_<NAME>``, the proto's ``RuntimeKind``) → the runtime's name.
WIRE_NAMES: dict[str, str] = {f"RUNTIME_{r.name.upper()}": r.name for r in RUNTIMES}
#: Device info's runtime name → the runtime.
BY_DEVICE_NAME: dict[str, Runtime] = {r.device_name: r for r in RUNTIMES}
#: Device info's runtime name → the module whose presence means it is installed (what the probe asks).
PROBED_MODULES: dict[str, str] = {r.device_name: r.module for r in RUNTIMES}

_unrun = sorted(set(MODEL_FORMATS) - set(BY_FORMAT))
if _unrun:  # a format added to the contract without its runtime: fail at import, never run it with another
    raise ImportError(f"formats without a runtime in edge_agent.runtimes.registry: {', '.join(_unrun)}")


def for_format(fmt: str) -> Runtime:
    """The runtime of artifact format ``fmt``.

    Raises:
        ArtifactRejected: no runtime here runs that format.
    """
    runtime = BY_FORMAT.get(fmt)
    if runtime is None:
        raise ArtifactRejected(f"an artifact of format {fmt} is not a model this agent runs")
    return runtime
