"""The agent's records as protobuf messages: one place that turns the journal's and the worker's dicts into the
wire's messages (for the RPCs, and for the journal's check that every record it keeps can be served)."""

from __future__ import annotations

import math
from array import array
from typing import Any

from google.protobuf import json_format

from edge_agent.contract.latency import SAMPLES_FIELD
from edge_agent.v1 import agent_pb2 as pb


def jsonable(value: Any) -> Any:
    """protobuf's JSON parser wants NaN / Infinity as strings, and lists (the journal packs samples in arrays)."""
    if isinstance(value, array):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def parse_into(message: Any, payload: dict[str, Any] | None) -> Any:
    """Fill ``message`` from ``payload``; raises ``json_format.ParseError`` for a value of the wrong type."""
    return json_format.ParseDict(jsonable(payload or {}), message, ignore_unknown_fields=True)


def settings_into(message: pb.BenchmarkSettings, settings: dict[str, Any]) -> None:
    # The journal records the resolved runtime ("onnxruntime"), not the request's enum: leave that one out.
    parse_into(message, {k: v for k, v in settings.items() if k != "runtime"})


def result_into(message: Any, result: dict[str, Any]) -> None:
    """A run's result (latency, device state, evaluation, ..., and the settings it ran with) into ``message``."""
    body = dict(result)
    settings = body.pop("settings", None)
    parse_into(message, body)
    if isinstance(settings, dict):
        settings_into(message.settings, settings)


def check_servable(result: dict[str, Any]) -> None:
    """Raise ValueError unless ``result`` (samples aside: checked on their own) converts to the wire's message."""
    body = dict(result)
    if isinstance(body.get("latency"), dict):
        body["latency"] = {k: v for k, v in body["latency"].items() if k != SAMPLES_FIELD}
    try:
        result_into(pb.RunRecord().result, body)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"a result the wire cannot carry ({str(exc)[:120]})") from None
