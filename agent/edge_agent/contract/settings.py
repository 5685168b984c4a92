"""Benchmark settings: one typed object owning the defaults, the bounds and the validation.

The wire form is ``edge_agent.v1.BenchmarkSettings``, whose numeric fields are proto3 ``optional``: an unset field
takes the default below, and 0 is a value like any other (``--min-seconds 0`` means no minimum time). Values are
checked strictly: NaN, infinities, fractions for integer fields and anything outside the bounds are refused with a
message that names the field and its allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from edge_agent.contract.errors import InvalidSettings
from edge_agent.contract.formats import MODEL_FORMATS

#: The wire's runtime names: unspecified (the artifact's own), then one per artifact format.
RUNTIMES = ("RUNTIME_UNSPECIFIED", *(f"RUNTIME_{f.runtime.upper()}" for f in MODEL_FORMATS.values()))
GRAPH_OPTIMIZATIONS = ("GRAPH_OPT_UNSPECIFIED", "GRAPH_OPT_DISABLE", "GRAPH_OPT_BASIC", "GRAPH_OPT_EXTENDED", "GRAPH_OPT_ALL")


@dataclass(frozen=True)
class BenchmarkSettings:
    batch_size: int = 1
    threads: int = 1
    warmup_runs: int = 10
    warmup_min_seconds: float = 0.5
    iterations: int = 100
    min_seconds: float = 1.0
    timeout_seconds: float = 600.0
    runtime: str = "RUNTIME_UNSPECIFIED"
    graph_optimization: str = "GRAPH_OPT_UNSPECIFIED"
    keep_samples: bool = False

    #: (minimum, maximum) of every numeric setting; ``threads`` is further bounded by the device's cores.
    BOUNDS: ClassVar[dict[str, tuple[float, float]]] = {
        "batch_size": (1, 1024),
        "threads": (1, 256),
        "warmup_runs": (0, 100_000),
        "warmup_min_seconds": (0.0, 600.0),
        "iterations": (1, 1_000_000),
        "min_seconds": (0.0, 3600.0),
        "timeout_seconds": (1.0, 86_400.0),
    }

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, cpu_count: int | None = None) -> BenchmarkSettings:
        """Settings from a dict (JSON or a proto's dict form): missing or None keys take the defaults.

        Raises:
            InvalidSettings: an unknown key, a wrong type, a non-finite value or a value out of bounds.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidSettings(f"unknown benchmark setting(s) {', '.join(unknown)[:200]}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = raw.get(f.name)
            if value is None:
                continue
            values[f.name] = _checked(f.name, value, cls.BOUNDS.get(f.name), cpu_count)
        return cls(**values)

    @classmethod
    def from_proto(cls, message: Any, *, cpu_count: int | None = None) -> BenchmarkSettings:
        """Settings from an ``edge_agent.v1.BenchmarkSettings``: only the fields the client set count."""
        raw: dict[str, Any] = {}
        for name in cls.BOUNDS:
            if message.HasField(name):
                raw[name] = getattr(message, name)
        runtime = message.DESCRIPTOR.fields_by_name["runtime"].enum_type.values_by_number.get(message.runtime)
        graph = message.DESCRIPTOR.fields_by_name["graph_optimization"].enum_type.values_by_number.get(message.graph_optimization)
        raw["runtime"] = runtime.name if runtime is not None else f"unknown value {message.runtime}"
        raw["graph_optimization"] = graph.name if graph is not None else f"unknown value {message.graph_optimization}"
        raw["keep_samples"] = message.keep_samples
        return cls.from_mapping(raw, cpu_count=cpu_count)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _checked(name: str, value: Any, bounds: tuple[float, float] | None, cpu_count: int | None) -> Any:
    if name == "keep_samples":
        if not isinstance(value, bool):
            raise InvalidSettings(f"keep_samples must be true or false, got {str(value)[:40]!r}")
        return value
    if name in ("runtime", "graph_optimization"):
        allowed = RUNTIMES if name == "runtime" else GRAPH_OPTIMIZATIONS
        if value not in allowed:
            raise InvalidSettings(f"{name}={str(value)[:40]!r} is not one of {', '.join(allowed)}")
        return value
    assert bounds is not None  # every numeric field has bounds (a programming error otherwise)
    low, high = bounds
    if name == "threads" and cpu_count:
        high = min(high, cpu_count)
    integer = isinstance(BenchmarkSettings.__dataclass_fields__[name].default, int)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSettings(f"{name} must be a number, got {str(value)[:40]!r}")
    if not math.isfinite(value):
        raise InvalidSettings(f"{name}={value} is not a finite number: allowed {low:g}..{high:g}")
    if name == "warmup_runs" and value == -1:  # the contract before optional fields: -1 meant none
        value = 0
    if integer and value != int(value):
        raise InvalidSettings(f"{name}={value} must be a whole number: allowed {low:g}..{high:g}")
    if not low <= value <= high:
        raise InvalidSettings(f"{name}={value:g} is out of bounds: allowed {low:g}..{high:g}")
    return int(value) if integer else float(value)
