"""The pick: accuracy budget, fastest, ties within the noise, tie break by size then accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from edge_opt.pick import Candidate, pick, ties_with

pytestmark = pytest.mark.unit


def _samples(median: float, spread: float, n: int = 41, seed: int = 0) -> list[float]:
    """``n`` samples spread evenly over median ± spread, shuffled: the median is exact, the interval known."""
    values = median + spread * np.linspace(-1.0, 1.0, n)
    np.random.default_rng(seed).shuffle(values)
    return [float(v) for v in values]


def test_clear_fastest_wins_even_when_larger() -> None:
    # setup
    fast = Candidate("int8-executorch", _samples(5.0, 0.05), 0.90, 3_000_000)
    slow = Candidate("int8-onnx", _samples(6.0, 0.05, seed=1), 0.90, 2_000_000)
    # execute
    result = pick([slow, fast], reference_accuracy=0.90)
    # assert
    assert result.winner is fast and result.fastest is fast
    assert [v.status for v in result.verdicts] == ["winner", "slower"]
    assert result.verdicts[1].ratio_to_fastest == pytest.approx(1.2, rel=0.02)


def test_tie_within_noise_goes_to_the_smaller_file() -> None:
    fast = Candidate("fp32-executorch", _samples(5.00, 0.5), 0.92, 9_000_000)
    close = Candidate("int8-onnx", _samples(5.05, 0.5, seed=1), 0.918, 2_600_000)
    result = pick([fast, close], reference_accuracy=0.92)
    assert result.fastest is fast
    assert result.winner is close
    statuses = {v.candidate.name: v.status for v in result.verdicts}
    assert statuses == {"int8-onnx": "winner", "fp32-executorch": "tie"}


def test_same_size_tie_goes_to_the_more_accurate() -> None:
    a = Candidate("a", _samples(5.0, 0.5), 0.910, 1000)
    b = Candidate("b", _samples(5.0, 0.5, seed=1), 0.915, 1000)
    assert pick([a, b], reference_accuracy=0.915).winner is b


def test_a_tight_difference_beyond_the_noise_is_not_a_tie() -> None:
    # 2% apart with very tight samples: the intervals do not overlap, so the larger but faster one wins.
    fast = Candidate("fast", _samples(5.0, 0.01), 0.9, 9_000_000)
    small = Candidate("small", _samples(5.1, 0.01, seed=1), 0.9, 1_000)
    assert not ties_with(small, fast)
    assert pick([fast, small], reference_accuracy=0.9).winner is fast


def test_a_very_noisy_candidate_does_not_tie_beyond_the_gap() -> None:
    # Overlapping intervals, but its median is 10% slower: the tie gap (5%) keeps it from winning on size.
    fast = Candidate("fast", _samples(5.0, 0.05), 0.9, 9_000_000)
    noisy = Candidate("noisy", _samples(5.5, 3.0, seed=1), 0.9, 1_000)
    assert noisy.interval[0] <= fast.interval[2]
    result = pick([fast, noisy], reference_accuracy=0.9)
    assert result.winner is fast


def test_over_budget_candidates_are_out_even_when_fastest() -> None:
    fastest = Candidate("int8-lossy", _samples(3.0, 0.05), 0.900, 1_000)
    ok = Candidate("int8-ok", _samples(4.0, 0.05, seed=1), 0.9160, 2_000)
    fp32 = Candidate("fp32", _samples(8.0, 0.05, seed=2), 0.9200, 9_000)
    result = pick([fastest, ok, fp32], reference_accuracy=0.92, max_accuracy_drop=0.005)
    assert result.winner is ok
    lossy = next(v for v in result.verdicts if v.candidate is fastest)
    assert lossy.status == "over budget"
    assert "2.00 points below FP32" in lossy.reason
    # exactly at the budget is inside it
    edge = Candidate("edge", _samples(3.5, 0.05, seed=3), 0.915, 1_500)
    assert pick([edge, fp32], reference_accuracy=0.92, max_accuracy_drop=0.005).winner is edge
    # the budget can be turned off (random weights: accuracy means nothing)
    assert pick([fastest, ok], reference_accuracy=0.92, max_accuracy_drop=None).winner is fastest


def test_no_samples_and_empty_input() -> None:
    unmeasured = Candidate("x", [], 0.9, 1)
    result = pick([unmeasured], reference_accuracy=0.9)
    assert result.winner is None
    assert result.verdicts[0].status == "no samples"
    assert pick([], reference_accuracy=None).winner is None


def test_json_form_names_winner_and_evidence() -> None:
    a = Candidate("a", _samples(5.0, 0.1), 0.9, 100)
    b = Candidate("b", _samples(7.0, 0.1, seed=1), 0.9, 50)
    data = pick([a, b], reference_accuracy=0.9).to_dict()
    assert data["winner"] == "a"
    first = data["candidates"][0]
    assert first["name"] == "a" and first["status"] == "winner"
    assert first["p50_interval_ms"][0] <= first["p50_ms"] <= first["p50_interval_ms"][1]
    assert set(first) >= {"accuracy", "size_bytes", "samples", "ratio_to_fastest"}


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        pick([Candidate("a", [1.0], 0.9, 1), Candidate("a", [2.0], 0.9, 1)], reference_accuracy=0.9)
