"""A run's events as the run manager publishes them (queued, phase, progress, result, error), and where a
subscriber's events go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Event:
    run_id: str
    state: str
    kind: str  # queued | phase | progress | result | error
    payload: Any


class EventSink(Protocol):
    """Where one subscriber's events go; ``put`` is called from any thread and must not block."""

    def put(self, event: Event) -> None: ...
