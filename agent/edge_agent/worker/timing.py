"""The timing loop and latency statistics, shared by the device agent and the host toolchain.

Warm-up runs until both a count and a minimum time are reached; measurement likewise. Each sample is one call
timed with ``time.perf_counter_ns``. Statistics are computed from the raw samples, which are kept.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: A measurement never runs longer than this many iterations, whatever the minimum time asks for.
MAX_ITERATIONS = 1_000_000


@dataclass(frozen=True)
class LatencyStats:
    """Latency figures in milliseconds, from ``samples_ms`` (kept for the results store)."""

    count: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    samples_ms: list[float] = field(repr=False)

    def throughput(self, batch_size: int) -> float:
        """Items per second at the median latency."""
        return batch_size * 1000.0 / self.p50_ms if self.p50_ms > 0 else math.inf


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of an already sorted list."""
    if not sorted_values:
        raise ValueError("no samples")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_ms: list[float]) -> LatencyStats:
    ordered = sorted(samples_ms)
    return LatencyStats(
        count=len(ordered),
        mean_ms=statistics.fmean(ordered),
        std_ms=statistics.pstdev(ordered) if len(ordered) > 1 else 0.0,
        min_ms=ordered[0],
        max_ms=ordered[-1],
        p50_ms=percentile(ordered, 50),
        p90_ms=percentile(ordered, 90),
        p95_ms=percentile(ordered, 95),
        p99_ms=percentile(ordered, 99),
        samples_ms=list(samples_ms),
    )


def measure(
    fn: Callable[[], object],
    *,
    warmup_runs: int,
    warmup_min_seconds: float,
    iterations: int,
    min_seconds: float,
    on_progress: Callable[[int, int], None] | None = None,
) -> LatencyStats:
    """Warm up, then time ``fn`` until ``iterations`` calls *and* ``min_seconds`` have passed."""
    start = time.perf_counter()
    done = 0
    while done < warmup_runs or time.perf_counter() - start < warmup_min_seconds:
        fn()
        done += 1
        if done >= MAX_ITERATIONS:
            break
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < iterations or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if on_progress is not None:
            on_progress(len(samples), iterations)
        if len(samples) >= MAX_ITERATIONS:
            break
    return summarize(samples)
