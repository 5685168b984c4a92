"""Statistics over rounds on synthetic round data: intervals, pooled and history spreads, separation, compare."""

from __future__ import annotations

import math

import numpy as np
import pytest
from edge_opt.device.round_stats import (
    GAP_ONLY,
    MIN_CHANGE,
    Spread,
    compare,
    estimate,
    history_spread,
    pooled_spread,
    separated,
    settled,
    t975,
)

pytestmark = pytest.mark.unit


def rounds(median: float, noise: float, k: int, rng: np.random.Generator) -> list[float]:
    """``k`` round medians: ``median`` times log-normal between-process noise of sd ``noise``."""
    return [float(v) for v in median * np.exp(rng.normal(0.0, noise, k))]


def test_t_quantiles() -> None:
    assert t975(1) == pytest.approx(12.706)
    assert t975(2) == pytest.approx(4.303)
    assert t975(12) == pytest.approx(2.179)
    assert t975(31) == pytest.approx(2.0395, abs=1e-3)
    assert t975(100) == pytest.approx(1.984, abs=1e-3)
    assert t975(math.inf) == pytest.approx(1.96, abs=1e-3)
    assert t975(0) == math.inf


def test_estimate_is_the_median_of_round_medians_with_an_interval_over_rounds() -> None:
    e = estimate([0.154, 0.106, 0.129])
    assert e.median == 0.129 and e.rounds == 3 and e.basis == "own"
    assert e.low < 0.106 and e.high > 0.154  # three rounds this far apart say little
    assert e.method == "t over 3 rounds"
    assert e.width == pytest.approx((e.high - e.low) / e.median)
    # more rounds of the same noise: narrower
    rng = np.random.default_rng(0)
    wide, narrow = estimate(rounds(1.0, 0.1, 3, rng)), estimate(rounds(1.0, 0.1, 30, rng))
    assert narrow.width < wide.width / 2
    # an even number of rounds: the mean of the middle two
    assert estimate([1.0, 2.0, 3.0, 4.0]).median == 2.5


def test_a_floor_widens_but_never_narrows() -> None:
    quiet = [1.0, 1.001, 0.999, 1.0005]
    own = estimate(quiet)
    floored = estimate(quiet, Spread(0.1, 20, "pooled spread of 6 candidates (20 df)", "pooled"))
    assert floored.width > own.width * 10 and floored.basis == "pooled"
    assert "wider than their own" in floored.method
    assert estimate(quiet, Spread(1e-6, 20, "tiny", "pooled")).width == own.width


def test_one_round_without_a_spread_ties_with_everything_and_gap_only_is_explicit() -> None:
    one = estimate([1.0])
    assert one.low == 0.0 and one.high == math.inf and not one.known and one.basis == "none"
    assert not separated(estimate([0.1, 0.1, 0.1]), one, 0.05)
    gap = estimate([1.0], GAP_ONLY)
    assert gap.low == gap.high == 1.0 and gap.basis == "gap"
    assert separated(estimate([0.9], GAP_ONLY), gap, 0.05)
    assert not separated(estimate([0.97], GAP_ONLY), gap, 0.05)
    assert estimate([]).rounds == 0 and math.isnan(estimate([]).median)


def test_pooled_spread_recovers_the_between_process_noise() -> None:
    rng = np.random.default_rng(1)
    groups = [rounds(m, 0.2, 5, rng) for m in (0.1, 0.2, 0.3, 0.15, 0.12, 0.5)]
    spread = pooled_spread(groups)
    assert spread is not None and spread.df == 24 and spread.kind == "pooled"
    assert 0.13 < spread.sd < 0.28
    assert pooled_spread([[1.0], [2.0]]) is None  # one round each: no spread


def test_history_spread_counts_a_step_change_once() -> None:
    rng = np.random.default_rng(2)
    steady = rounds(1.0, 0.02, 10, rng) + rounds(1.3, 0.02, 10, rng)  # an old regression that stayed
    spread = history_spread([steady])
    assert spread is not None and spread.kind == "history" and spread.df == 12
    assert spread.sd < 0.07  # a plain standard deviation of these logs is about 0.13
    assert np.std(np.log(steady), ddof=1) > 0.1
    assert history_spread([[1.0, 1.1, 1.0]]) is None  # fewer than MIN_HISTORY runs


def test_a_true_ten_percent_difference_is_separated() -> None:
    # 3% between-process noise, the adaptive pick's full 12 rounds each
    rng = np.random.default_rng(3)
    pairs = [(estimate(rounds(1.0, 0.03, 12, rng)), estimate(rounds(1.1, 0.03, 12, rng))) for _ in range(200)]
    assert sum(separated(fast, slow, 0.05) for fast, slow in pairs) >= 196
    assert not any(separated(slow, fast, 0.05) for fast, slow in pairs)


def test_equal_candidates_with_45_percent_between_process_noise_tie() -> None:
    # The figures: one candidate's medians moved 45% between two worker processes.
    fp32_onnx, int8_onnx = estimate([0.154, 0.106, 0.129]), estimate([0.133, 0.089, 0.138])
    assert not separated(int8_onnx, fp32_onnx, 0.05) and not separated(fp32_onnx, int8_onnx, 0.05)
    # And in general: equal candidates, log-normal noise of sd 0.2 (two processes differ by 45% or more in about
    # one pair of five), 3 to 12 rounds: two 95% intervals rarely fail to overlap.
    rng = np.random.default_rng(4)
    trials = [(rng.integers(3, 13), rng.integers(3, 13)) for _ in range(1000)]
    false = sum(
        separated(*sorted((estimate(rounds(1.0, 0.2, ka, rng)), estimate(rounds(1.0, 0.2, kb, rng))),
                          key=lambda e: e.median), 0.05)
        for ka, kb in trials
    )
    assert false <= 10  # about 0.5% expected


def test_settled_ties() -> None:
    a = estimate([1.0, 1.002, 0.998, 1.001])
    b = estimate([1.02, 1.021, 1.019, 1.02])
    assert not separated(a, b, 0.05) and settled(a, b, 0.05)
    loose = estimate([1.0, 1.3, 0.8])
    assert not settled(a, loose, 0.05)


def test_compare_threshold_default_tightened_and_widened_by_history() -> None:
    rng = np.random.default_rng(5)
    # no history: --min-effect decides
    default = compare(1.0, 1.06, None, 0.05)
    assert default.verdict == "regression" and default.basis == "default" and default.threshold == 0.05
    assert compare(1.0, 1.03, None, 0.05).verdict == "same"
    assert compare(1.0, 0.9, None, 0.05).verdict == "improvement"
    # a quiet device with a long history: a 3% slow-down is beyond its noise (tightened)
    quiet = history_spread([rounds(1.0, 0.004, 25, rng)])
    tight = compare(1.0, 1.03, quiet, 0.05)
    assert tight.verdict == "regression" and tight.basis == "history: tightened" and MIN_CHANGE <= tight.threshold < 0.05
    assert "tightened from 5.0%" in tight.note
    # a noisy device: a 20% slow-down is within its noise (widened)
    noisy = history_spread([rounds(1.0, 0.15, 25, rng)])
    wide = compare(1.0, 1.2, noisy, 0.05)
    assert wide.verdict == "same" and wide.basis == "history: widened" and wide.threshold > 0.3
    # never below MIN_CHANGE, however quiet
    still = history_spread([[1.0] * 10])
    assert compare(1.0, 1.005, still, 0.05).verdict == "same"
