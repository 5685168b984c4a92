"""Latency statistics over rounds: the unit that varies is the worker process, not the call.

A **round** is one run of one candidate in a fresh worker process; its figure is the median of that run's calls.
Between two processes the median of the same model moves by tens of percent on a shared machine (memory
placement, which core, frequency, neighbours), while the calls inside one process scatter much less: an interval
computed from pooled per-call samples is far too narrow, and turns that noise into verdicts. Everything here
works on round medians instead. Used by the pick (:mod:`edge_opt.device.pick`), ``edge-fleet compare`` and its
regression gate, and the fleet report's heatmap.

**Estimate of one candidate.** Its figure is the median of its round medians. Its 95% interval is a Student t
interval on the logarithms of the round medians (latency noise is multiplicative), centred on that median and
widened by 1.2533 (the median's standard error against the mean's) from three rounds on:
``median · exp(± t(df) · s · 1.2533 / √k)``. The spread ``s`` is the candidate's own, with k − 1 degrees of
freedom, but never narrower than a *floor*: the pooled spread of every candidate measured on the same device in
the same rounds (:func:`pooled_spread`), or the device's history (:func:`history_spread`); each spread brings its
own degrees of freedom. One round and no floor: no interval can be given (0–∞), which ties with everything;
:data:`GAP_ONLY` says explicitly that no spread is known and the tie gap alone decides. Not order statistics nor a
bootstrap over rounds: with three rounds neither reaches 95% (the min–max of three covers the median three times
in four), and three rounds are what a clear winner should need.

**Separated.** A slower candidate is separated from a faster one when its interval lies entirely above the
faster's *and* its median is more than the tie gap slower; otherwise they tie. A tie is **settled** when both
intervals together span less than the gap: more rounds could not separate them.

**A change between two runs** (``edge-fleet compare``): the candidate run against the baseline run of the same
artifact on the same device. With at least :data:`MIN_HISTORY` past runs of that artifact there, the threshold is
what two single runs differ by at 95% given the device's own run-to-run spread (``t · s · √2``; the spread from
successive differences, so that an earlier step change does not count as noise): that may tighten or widen
``min_effect``, which is the threshold without such history. Never below :data:`MIN_CHANGE`.

No torch and no numpy: the standard library's ``statistics`` and ``math`` suffice.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Two-sided 95% Student t quantiles (t.ppf(0.975, df)) for df = 1..30; above, a Cornish-Fisher expansion.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964
#: The median's standard error relative to the mean's (normal data, large k): its intervals are this much wider.
MEDIAN_EFFICIENCY = 1.2533
#: ``edge-fleet compare`` never calls a change smaller than this a regression or an improvement, whatever the history.
MIN_CHANGE = 0.01
#: Past runs of the same artifact on the same device needed before they set the compare threshold.
MIN_HISTORY = 5


def t975(df: float) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (a 95% two-sided interval)."""
    if df < 1:
        return math.inf
    if df <= len(_T975) and float(df).is_integer():
        return _T975[int(df) - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Spread:
    """A between-round spread: the standard deviation of log latency, its degrees of freedom, and its source."""

    sd: float
    df: float
    source: str
    kind: str = "own"  # "own" (the candidate's rounds), "pooled" (all candidates'), "history" (past runs)

    @property
    def half(self) -> float:
        """The 95% half-width, in log units, of one round."""
        return t975(self.df) * self.sd


@dataclass(frozen=True)
class Estimate:
    """One candidate's figure (the median of its round medians) and its 95% interval, in ms."""

    median: float
    low: float
    high: float
    rounds: int
    method: str
    basis: str = "none"  # the spread that set the width: "own", "pooled", "history", or "none"

    @property
    def width(self) -> float:
        """The interval's width relative to the median (0.1 = the interval spans 10% of it); inf if unknown."""
        if not self.rounds or not math.isfinite(self.high) or self.median <= 0:
            return math.inf
        return (self.high - self.low) / self.median

    @property
    def known(self) -> bool:
        return self.rounds > 0 and math.isfinite(self.high)


def _valid(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v) and v > 0]


def _logs(values: Iterable[float]) -> list[float]:
    return [math.log(v) for v in _valid(values)]


def estimate(round_medians: Sequence[float], *floors: Spread | None) -> Estimate:
    """The median of ``round_medians`` and its 95% interval over rounds, never narrower than any of ``floors``."""
    values = _valid(round_medians)
    k = len(values)
    if k == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "no rounds")
    median = statistics.median(values)
    rounds = f"{k} round{'s' if k > 1 else ''}"
    own = Spread(statistics.stdev([math.log(v) for v in values]), k - 1, f"t over {rounds}") if k >= 2 else None
    usable = [s for s in (own, *floors) if s is not None and math.isfinite(s.half)]
    if not usable:
        return Estimate(median, 0.0, math.inf, k, f"none: {rounds}, no spread known", "none")
    widest = max(usable, key=lambda s: s.half)
    half = widest.half * (MEDIAN_EFFICIENCY if k >= 3 else 1.0) / math.sqrt(k)
    wider = ", wider than their own" if own else ""
    method = own.source if widest is own else f"{rounds}, {widest.source}{wider}"
    return Estimate(median, median * math.exp(-half), median * math.exp(half), k, method, widest.kind)


def pooled_spread(groups: Iterable[Sequence[float]], what: str = "candidates") -> Spread | None:
    """The spread of log round medians pooled over ``groups`` (each one candidate's rounds on the same device)."""
    squares, df, n = 0.0, 0, 0
    for group in groups:
        logs = _logs(group)
        if len(logs) >= 2:
            mean = statistics.fmean(logs)
            squares += sum((v - mean) ** 2 for v in logs)
            df += len(logs) - 1
            n += 1
    if df == 0:
        return None
    return Spread(math.sqrt(squares / df), df, f"pooled spread of {n} {what} ({df} df)", "pooled")


def history_spread(series: Iterable[Sequence[float]], what: str = "past runs", min_runs: int = MIN_HISTORY) -> Spread | None:
    """The run-to-run spread of a device from its past run medians, each series one artifact's in time order.

    From successive differences (σ² = Σ d² / 2(n − 1), von Neumann): a step change in the history (a real
    regression, fixed later) counts once, not as noise throughout. Their efficiency is about 2/3 of a plain
    standard deviation's, hence 2/3 of the degrees of freedom. None with fewer than ``min_runs`` runs in all.
    """
    squares, steps, runs = 0.0, 0, 0
    for values in series:
        logs = _logs(values)
        if len(logs) >= 2:
            squares += sum((b - a) ** 2 for a, b in itertools.pairwise(logs))
            steps += len(logs) - 1
            runs += len(logs)
    if steps == 0 or runs < min_runs:
        return None
    df = max(1.0, math.floor(2 * steps / 3))
    return Spread(math.sqrt(squares / (2 * steps)), df, f"history of {runs} {what} ({df:.0f} df)", "history")


#: No spread known (one run each, no history): the tie gap alone separates.
GAP_ONLY = Spread(0.0, math.inf, "no history: the tie gap alone", "gap")


def separated(fast: Estimate, slow: Estimate, tie_gap: float) -> bool:
    """Is ``slow`` slower than ``fast`` beyond the noise: intervals apart *and* medians more than ``tie_gap`` apart?"""
    if not (fast.known and slow.known):
        return False
    return slow.low > fast.high and slow.median > fast.median * (1 + tie_gap)


def settled(a: Estimate, b: Estimate, tie_gap: float) -> bool:
    """A tie that more rounds cannot undo: both intervals together span less than ``tie_gap``."""
    if not (a.known and b.known) or min(a.low, b.low) <= 0:
        return False
    return max(a.high, b.high) <= min(a.low, b.low) * (1 + tie_gap)


@dataclass(frozen=True)
class Change:
    """A run against its baseline: the verdict, the change, and what threshold decided it, and why that one."""

    verdict: str  # "regression", "improvement", "same"
    change: float  # candidate / baseline - 1
    threshold: float  # the relative change that counts (slower); faster: 1 - 1 / (1 + threshold)
    basis: str  # "default", "history: tightened", "history: widened"
    note: str


def compare(baseline_ms: float, candidate_ms: float, history: Spread | None, min_effect: float) -> Change:
    """The compare rule (module docstring): ``history`` is the device's run-to-run spread of this artifact, if known."""
    if not (baseline_ms > 0 and candidate_ms > 0):
        return Change("same", math.nan, min_effect, "default", "no median to compare")
    change = candidate_ms / baseline_ms - 1
    if history is None:
        threshold, basis = min_effect, "default"
        note = f"threshold {min_effect * 100:.1f}% (--min-effect: fewer than {MIN_HISTORY} past runs)"
    else:
        threshold = max(MIN_CHANGE, math.exp(history.half * math.sqrt(2)) - 1)
        basis = "history: tightened" if threshold < min_effect else "history: widened"
        direction = "tightened" if threshold < min_effect else "widened"
        note = f"threshold {threshold * 100:.1f}% ({direction} from {min_effect * 100:.1f}% by the {history.source})"
    log_change, log_threshold = math.log1p(change), math.log1p(threshold)
    verdict = "regression" if log_change >= log_threshold else "improvement" if log_change <= -log_threshold else "same"
    return Change(verdict, change, threshold, basis, note)
