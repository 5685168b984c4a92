"""The pick on synthetic round data: accuracy budget, fastest, ties over rounds, tie break by size then accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from edge_opt.device.pick import Candidate, pick
from edge_opt.device.round_stats import Spread

pytestmark = pytest.mark.unit


def _rounds(median: float, noise: float = 0.01, k: int = 5, seed: int = 0) -> list[float]:
    """``k`` round medians around ``median``, log-normal between-process noise of sd ``noise``."""
    return [float(v) for v in median * np.exp(np.random.default_rng(seed).normal(0.0, noise, k))]


def test_clear_fastest_wins_even_when_larger() -> None:
    # setup
    fast = Candidate("int8-executorch", _rounds(5.0), 0.90, 3_000_000)
    slow = Candidate("int8-onnx", _rounds(6.0, seed=1), 0.90, 2_000_000)
    # execute
    result = pick([slow, fast], reference_accuracy=0.90)
    # assert
    assert result.winner is fast and result.fastest is fast
    assert [v.status for v in result.verdicts] == ["winner", "slower"]
    assert result.verdicts[1].ratio_to_fastest == pytest.approx(1.2, rel=0.03)
    assert result.decided == "separated" and result.summary() == "separated"


def test_a_true_ten_percent_difference_is_separated() -> None:
    fast = Candidate("fast", _rounds(1.0, 0.02, 8), 0.9, 9_000_000)
    slow = Candidate("small", _rounds(1.1, 0.02, 8, seed=1), 0.9, 1_000)
    result = pick([fast, slow], reference_accuracy=0.9)
    assert result.winner is fast and result.tie_set == [fast] and result.decided == "separated"


def test_equal_candidates_with_45_percent_noise_tie_and_go_to_the_smaller_file() -> None:
    # The figures, two worker processes each and a third: FP32 ONNX 0.154 then 0.106 ms, INT8 ONNX 0.133
    # then 0.089. Per-call intervals called one of them "6.9% slower"; over rounds they tie.
    fp32 = Candidate("fp32-onnx", [0.154, 0.106, 0.129], 0.92, 2_850_000)
    int8 = Candidate("int8-onnx", [0.133, 0.089, 0.138], 0.918, 730_000)
    result = pick([fp32, int8], reference_accuracy=0.92)
    assert result.fastest is fp32 and result.winner is int8
    assert {c.name for c in result.tie_set} == {"fp32-onnx", "int8-onnx"}
    assert result.decided == ""  # undecided: more rounds could tell
    assert result.summary() == "tie: fp32-onnx and int8-onnx, broken by size"
    statuses = {v.candidate.name: v.status for v in result.verdicts}
    assert statuses == {"int8-onnx": "winner", "fp32-onnx": "tie"}


def test_equal_candidates_with_between_process_noise_are_never_separated_by_noise_alone() -> None:
    # 500 picks of two equal candidates, 45% apart between processes not rare (log sd 0.2), 3 to 12 rounds each:
    # the fastest is then separated from the other only by chance, about 0.5% of the time.
    rng = np.random.default_rng(7)
    decisive = 0
    for trial in range(500):
        k = int(rng.integers(3, 13))
        a = Candidate("a", _rounds(1.0, 0.2, k, seed=2 * trial + 100), 0.9, 1_000)
        b = Candidate("b", _rounds(1.0, 0.2, k, seed=2 * trial + 101), 0.9, 2_000)
        decisive += pick([a, b], reference_accuracy=0.9).decided == "separated"
    assert decisive <= 8


def test_same_size_tie_goes_to_the_more_accurate() -> None:
    a = Candidate("a", _rounds(5.0, 0.1), 0.910, 1000)
    b = Candidate("b", _rounds(5.0, 0.1, seed=1), 0.915, 1000)
    result = pick([a, b], reference_accuracy=0.915)
    assert result.winner is b and result.broken_by == ["accuracy"]


def test_within_the_gap_is_a_tie_even_when_intervals_do_not_overlap_and_is_settled() -> None:
    # 2% apart with very tight rounds: the intervals do not overlap, but 2% is inside the 5% tie gap.
    fast = Candidate("fast", _rounds(5.0, 0.001), 0.9, 9_000_000)
    small = Candidate("small", _rounds(5.1, 0.001, seed=1), 0.9, 1_000)
    result = pick([fast, small], reference_accuracy=0.9)
    assert result.winner is small and result.decided == "settled"
    # with no gap, the faster is separated
    assert pick([fast, small], reference_accuracy=0.9, max_tie_gap=0.0).winner is fast


def test_a_very_noisy_candidate_ties_until_its_rounds_tell() -> None:
    fast = Candidate("fast", _rounds(5.0, 0.01), 0.9, 9_000_000)
    noisy = Candidate("noisy", _rounds(6.0, 0.5, k=3, seed=1), 0.9, 1_000)
    result = pick([fast, noisy], reference_accuracy=0.9)
    assert result.winner is noisy and result.decided == ""
    settled_down = Candidate("noisy", _rounds(6.0, 0.01, seed=1), 0.9, 1_000)
    assert pick([fast, settled_down], reference_accuracy=0.9).winner is fast


def test_the_pooled_spread_is_every_candidates_floor() -> None:
    # One candidate's three rounds agree by chance; the others show the device's real between-process noise.
    lucky = Candidate("lucky", [1.0, 1.001, 0.999], 0.9, 1_000)
    others = [Candidate(f"o{i}", _rounds(1.6, 0.25, k=3, seed=i), 0.9, 10_000 + i) for i in range(5)]
    result = pick([lucky, *others], reference_accuracy=0.9)
    lucky_estimate = result.estimate_of("lucky")
    assert lucky_estimate.basis == "pooled" and lucky_estimate.width > 0.3
    assert result.spread is not None and result.spread.df == 12


def test_a_floor_from_history_widens_single_rounds() -> None:
    a = Candidate("a", [1.0], 0.9, 2_000)
    b = Candidate("b", [1.12], 0.9, 1_000)
    assert pick([a, b], reference_accuracy=0.9).winner is b  # one round each, no spread at all: everything ties
    noisy = Spread(0.1, 12, "history of 20 runs (12 df)", "history")
    assert pick([a, b], reference_accuracy=0.9, floor=noisy).winner is b
    quiet = Spread(0.01, 12, "history of 20 runs (12 df)", "history")
    assert pick([a, b], reference_accuracy=0.9, floor=quiet).winner is a


def test_over_budget_candidates_are_out_even_when_fastest() -> None:
    fastest = Candidate("int8-lossy", _rounds(3.0), 0.900, 1_000)
    ok = Candidate("int8-ok", _rounds(4.0, seed=1), 0.9160, 2_000)
    fp32 = Candidate("fp32", _rounds(8.0, seed=2), 0.9200, 9_000)
    result = pick([fastest, ok, fp32], reference_accuracy=0.92, max_accuracy_drop=0.005)
    assert result.winner is ok
    lossy = next(v for v in result.verdicts if v.candidate is fastest)
    assert lossy.status == "over budget"
    assert "2.00 points below FP32" in lossy.reason
    # exactly at the budget is inside it
    edge = Candidate("edge", _rounds(3.5, seed=3), 0.915, 1_500)
    assert pick([edge, fp32], reference_accuracy=0.92, max_accuracy_drop=0.005).winner is edge
    # the budget can be turned off (random weights: accuracy means nothing)
    assert pick([fastest, ok], reference_accuracy=0.92, max_accuracy_drop=None).winner is fastest


def test_no_rounds_and_empty_input() -> None:
    unmeasured = Candidate("x", [], 0.9, 1)
    result = pick([unmeasured], reference_accuracy=0.9)
    assert result.winner is None
    assert result.verdicts[0].status == "not measured"
    assert pick([], reference_accuracy=None).winner is None


def test_json_form_names_winner_rounds_and_interval() -> None:
    a = Candidate("a", _rounds(5.0, 0.02), 0.9, 100, calls=5000, rounds_excluded=1, rounds_redone=2)
    b = Candidate("b", _rounds(7.0, 0.02, seed=1), 0.9, 50)
    data = pick([a, b], reference_accuracy=0.9).to_dict()
    assert data["winner"] == "a" and data["tie_set"] == ["a"] and data["decided"] == "separated"
    first = data["candidates"][0]
    assert first["name"] == "a" and first["status"] == "winner"
    assert first["interval_ms"][0] <= first["p50_ms"] <= first["interval_ms"][1]
    assert first["rounds"] == 5 and len(first["rounds_ms"]) == 5
    assert first["interval_method"] in ("t over 5 rounds", "5 rounds, pooled spread of 2 candidates (8 df), wider than their own")
    assert 0 < first["interval_width"] < 0.1
    assert (first["calls"], first["rounds_excluded"], first["rounds_redone"]) == (5000, 1, 2)
    assert set(first) >= {"accuracy", "size_bytes", "ratio_to_fastest", "interval_basis", "rounds_disturbed"}
    assert data["rule"]["figure"].startswith("median of round medians")
    assert data["pooled_spread"]["df"] == 8


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        pick([Candidate("a", [1.0], 0.9, 1), Candidate("a", [2.0], 0.9, 1)], reference_accuracy=0.9)
