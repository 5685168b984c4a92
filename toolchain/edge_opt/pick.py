"""Pick the fastest candidate (precision × format) by measurement, with an accuracy budget and tie rules.

Input: candidates, each with its raw latency samples (from interleaved rounds on the device that will run it),
its accuracy (measured on the device where there is such a figure, else on the host) and its size. Rule:

1. **Budget.** A candidate more than ``max_accuracy_drop`` (default 0.005, i.e. 0.5 points) below the FP32
   reference accuracy is out; so is one without samples.
2. **Fastest.** The candidate with the lowest median latency among those left.
3. **Ties.** A candidate ties with the fastest when the 95% confidence intervals of their medians overlap
   (order statistics, :func:`edge_opt.fleet.stats.median_ci`) *and* its median is within ``max_tie_gap``
   (default 5%) of the fastest's: overlapping intervals alone would let a very noisy candidate tie with anything.
4. **Tie break.** Among the tied: the smallest file, then the highest accuracy, then the lowest median.

The module is pure (no torch, no runtime); the benchmark script and the device-side pick feed it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_opt.fleet.stats import median_ci

DEFAULT_MAX_ACCURACY_DROP = 0.005
DEFAULT_MAX_TIE_GAP = 0.05


@dataclass(frozen=True)
class Candidate:
    name: str
    samples_ms: Sequence[float]
    accuracy: float | None  # fraction; None: not measured (no budget can be checked)
    size_bytes: int
    accuracy_source: str = "host"  # "device" where the device measured it

    @property
    def interval(self) -> tuple[float, float, float]:
        """(low, median, high) of the median latency, 95%."""
        return median_ci(list(self.samples_ms))

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else math.nan


@dataclass
class Verdict:
    """One candidate's place in the pick."""

    candidate: Candidate
    status: str  # "winner", "tie", "slower", "over budget", "no samples"
    ratio_to_fastest: float = math.nan
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        low, mid, high = self.candidate.interval
        return {
            "name": self.candidate.name,
            "status": self.status,
            "p50_ms": _finite(mid),
            "p50_interval_ms": [_finite(low), _finite(high)],
            "samples": len(self.candidate.samples_ms),
            "ratio_to_fastest": _finite(self.ratio_to_fastest),
            "accuracy": self.candidate.accuracy,
            "accuracy_source": self.candidate.accuracy_source,
            "size_bytes": self.candidate.size_bytes,
            "reason": self.reason,
        }


@dataclass
class Pick:
    winner: Candidate | None
    fastest: Candidate | None
    verdicts: list[Verdict] = field(default_factory=list)
    reference_accuracy: float | None = None
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    max_tie_gap: float = DEFAULT_MAX_TIE_GAP

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner.name if self.winner else None,
            "fastest": self.fastest.name if self.fastest else None,
            "rule": {
                "reference_accuracy": self.reference_accuracy,
                "max_accuracy_drop": self.max_accuracy_drop,
                "max_tie_gap": self.max_tie_gap,
                "tie": "95% intervals of the medians overlap and medians within max_tie_gap",
                "tie_break": ["smallest size", "highest accuracy", "lowest median"],
            },
            "candidates": [v.to_dict() for v in self.verdicts],
        }


def _finite(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None


def ties_with(candidate: Candidate, fastest: Candidate, max_tie_gap: float = DEFAULT_MAX_TIE_GAP) -> bool:
    """Is ``candidate`` indistinguishable from ``fastest`` within the measured noise (see the module rule 3)?"""
    c_lo, c_mid, _ = candidate.interval
    _, f_mid, f_hi = fastest.interval
    return c_lo <= f_hi and c_mid <= f_mid * (1 + max_tie_gap)


def pick(
    candidates: Sequence[Candidate],
    *,
    reference_accuracy: float | None,
    max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP,
    max_tie_gap: float = DEFAULT_MAX_TIE_GAP,
) -> Pick:
    """The winner among ``candidates`` by the module's rule; ``max_accuracy_drop=None`` disables the budget.

    Raises:
        ValueError: two candidates share a name, or a negative budget or gap.
    """
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique, got {names}")
    if (max_accuracy_drop is not None and max_accuracy_drop < 0) or max_tie_gap < 0:
        raise ValueError("max_accuracy_drop and max_tie_gap must be >= 0")
    verdicts: dict[str, Verdict] = {}
    eligible: list[Candidate] = []
    for c in candidates:
        if not c.samples_ms:
            verdicts[c.name] = Verdict(c, "no samples", reason="not measured")
        elif (
            max_accuracy_drop is not None
            and reference_accuracy is not None
            and (c.accuracy is None or c.accuracy < reference_accuracy - max_accuracy_drop - 1e-12)
        ):
            drop = "not measured" if c.accuracy is None else f"{(reference_accuracy - c.accuracy) * 100:.2f} points below FP32"
            verdicts[c.name] = Verdict(c, "over budget", reason=f"accuracy {drop} (budget {max_accuracy_drop * 100:.2f})")
        else:
            eligible.append(c)
    result = Pick(None, None, reference_accuracy=reference_accuracy, max_accuracy_drop=max_accuracy_drop or 0.0,
                  max_tie_gap=max_tie_gap)
    if eligible:
        fastest = min(eligible, key=lambda c: (c.p50_ms, c.size_bytes, c.name))
        tied = [c for c in eligible if c is fastest or ties_with(c, fastest, max_tie_gap)]
        winner = min(tied, key=lambda c: (c.size_bytes, -(c.accuracy or 0.0), c.p50_ms, c.name))
        result.winner, result.fastest = winner, fastest
        for c in eligible:
            ratio = c.p50_ms / fastest.p50_ms if fastest.p50_ms > 0 else math.nan
            if c is winner:
                why = "fastest" if c is fastest else f"ties with the fastest ({fastest.name}) and is smaller or more accurate"
                verdicts[c.name] = Verdict(c, "winner", ratio, why)
            elif c in tied:
                verdicts[c.name] = Verdict(c, "tie", ratio, f"within the noise of the fastest; {winner.name} won the tie break")
            else:
                verdicts[c.name] = Verdict(c, "slower", ratio, f"{(ratio - 1) * 100:.1f}% slower than the fastest")
    order = {"winner": 0, "tie": 1, "slower": 2, "over budget": 3, "no samples": 4}
    result.verdicts = sorted(
        verdicts.values(), key=lambda v: (order[v.status], v.candidate.p50_ms if v.candidate.samples_ms else math.inf)
    )
    return result
