from __future__ import annotations

import numpy as np
import pytest
from edge_agent.worker.timing import measure, percentile, summarize

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("q", [0, 1, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = sorted(np.random.default_rng(1).exponential(size=101).tolist())
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_summarize() -> None:
    stats = summarize([3.0, 1.0, 2.0, 4.0])
    assert (stats.count, stats.min_ms, stats.max_ms, stats.p50_ms, stats.mean_ms) == (4, 1.0, 4.0, 2.5, 2.5)
    assert stats.samples_ms == [3.0, 1.0, 2.0, 4.0]
    assert stats.throughput(32) == pytest.approx(32 * 1000 / 2.5)


def test_measure_counts_warmup_and_iterations() -> None:
    calls = []
    stats = measure(lambda: calls.append(1), warmup_runs=5, warmup_min_seconds=0.0, iterations=7, min_seconds=0.0)
    assert stats.count == 7
    assert len(calls) == 12


def test_measure_honours_min_seconds() -> None:
    stats = measure(lambda: None, warmup_runs=0, warmup_min_seconds=0.0, iterations=1, min_seconds=0.05)
    assert stats.count > 1
