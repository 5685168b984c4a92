"""The latency figures of a run, named once for every side: the proto's ``LatencyStats`` message, the worker's
:class:`edge_agent.worker.timing.LatencyStats`, the result dict the worker sends, the journal keeps and the host
commands print (``result["latency"]``). ``tests/unit/test_latency_contract.py`` holds the three to these names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

#: The statistics computed from the samples, in milliseconds (``count``: calls timed), in the proto's order.
STAT_FIELDS: Final = ("count", "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms")
#: Items (batch size × calls) per second at the median latency.
THROUGHPUT_FIELD: Final = "throughput_per_s"
#: The latency samples themselves (kept only when asked; at most a bounded, evenly spaced subset).
SAMPLES_FIELD: Final = "samples_ms"
#: Every field of a result's ``latency``, in the proto's order.
LATENCY_FIELDS: Final = (*STAT_FIELDS, THROUGHPUT_FIELD, SAMPLES_FIELD)


class Stats(Protocol):
    """What :func:`latency_record` reads: the statistics by their names and the throughput at a batch size."""

    @property
    def count(self) -> int: ...

    @property
    def mean_ms(self) -> float: ...

    @property
    def std_ms(self) -> float: ...

    @property
    def min_ms(self) -> float: ...

    @property
    def max_ms(self) -> float: ...

    @property
    def p50_ms(self) -> float: ...

    @property
    def p90_ms(self) -> float: ...

    @property
    def p95_ms(self) -> float: ...

    @property
    def p99_ms(self) -> float: ...

    def throughput(self, batch_size: int) -> float: ...


def latency_record(stats: Stats, batch_size: int, samples_ms: Sequence[float]) -> dict[str, object]:
    """A result's ``latency``: every statistic, the throughput at ``batch_size`` and the samples kept."""
    record: dict[str, object] = {name: getattr(stats, name) for name in STAT_FIELDS}
    record[THROUGHPUT_FIELD] = stats.throughput(batch_size)
    record[SAMPLES_FIELD] = list(samples_ms)
    return record
