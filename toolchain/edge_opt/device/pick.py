"""Pick the fastest candidate (precision × format) by measurement, with an accuracy budget and tie rules.

Input: candidates, each with its round medians (one per round: one run in a fresh worker process on the device
that will run it, in interleaved rounds), its accuracy (measured on the device where there is such a figure, else
on the host) and its size. The statistics are :mod:`edge_opt.device.round_stats`'s. Rule:

1. **Budget.** A candidate more than ``max_accuracy_drop`` (default 0.005, i.e. 0.5 points) below the FP32
   reference accuracy is out; so is one without rounds.
2. **Fastest.** The candidate with the lowest median of round medians among those left.
3. **Ties.** A candidate ties with the fastest unless it is *separated* from it: its 95% interval over rounds lies
   entirely above the fastest's and its median is more than ``max_tie_gap`` (default 5%) slower. Each interval's
   spread is at least the spread pooled over every candidate measured (the device's between-process noise), and
   at least ``floor`` when one is given (a device's history).
4. **Tie break.** Among the tied: the smallest file, then the highest accuracy, then the lowest median.

The pick is **decided** when the fastest is separated from every other candidate in budget ("separated"), or
when every tie is settled: within the gap, whatever more rounds could show ("settled"). Otherwise more rounds
could change it: :mod:`edge_opt.device.pick_runs` adds rounds for the tied candidates until it is decided or a budget
runs out. The module is pure (no torch, no runtime).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_opt.device.round_stats import Estimate, Spread, estimate, pooled_spread, separated, settled

DEFAULT_MAX_ACCURACY_DROP = 0.005
DEFAULT_MAX_TIE_GAP = 0.05
RULE = {
    "figure": "median of round medians (a round: one run in a fresh worker process)",
    "interval": "95% Student t over log round medians (x1.2533 for a median), at least the spread pooled over all "
    "candidates measured",
    "tie": "not separated: intervals overlap, or medians within max_tie_gap",
    "tie_break": ["smallest size", "highest accuracy", "lowest median"],
}


@dataclass(frozen=True)
class Candidate:
    name: str
    rounds_ms: Sequence[float]  # one median per round used
    accuracy: float | None  # fraction; None: not measured (no budget can be checked)
    size_bytes: int
    accuracy_source: str = "host"  # "device" where the device measured it
    calls: int = 0  # timed calls behind the rounds
    rounds_excluded: int = 0  # disturbed rounds left out of rounds_ms
    rounds_disturbed: int = 0  # disturbed rounds in rounds_ms (the candidate had too few clean ones)
    rounds_redone: int = 0  # rounds whose first run was disturbed and was run again


@dataclass
class Verdict:
    """One candidate's place in the pick."""

    candidate: Candidate
    estimate: Estimate
    status: str  # "winner", "tie", "slower", "over budget", "not measured"
    ratio_to_fastest: float = math.nan
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        c, e = self.candidate, self.estimate
        return {
            "name": c.name,
            "status": self.status,
            "p50_ms": _finite(e.median),
            "interval_ms": [_finite(e.low), _finite(e.high)],
            "interval_method": e.method,
            "interval_basis": e.basis,
            "interval_width": _finite(e.width),
            "rounds": e.rounds,
            "rounds_ms": [round(v, 6) for v in c.rounds_ms],
            "rounds_excluded": c.rounds_excluded,
            "rounds_disturbed": c.rounds_disturbed,
            "rounds_redone": c.rounds_redone,
            "calls": c.calls,
            "ratio_to_fastest": _finite(self.ratio_to_fastest),
            "accuracy": c.accuracy,
            "accuracy_source": c.accuracy_source,
            "size_bytes": c.size_bytes,
            "reason": self.reason,
        }


@dataclass
class Pick:
    winner: Candidate | None
    fastest: Candidate | None
    verdicts: list[Verdict] = field(default_factory=list)
    tie_set: list[Candidate] = field(default_factory=list)  # the fastest and every candidate tied with it
    broken_by: list[str] = field(default_factory=list)  # the tie-break keys that decided, in order
    decided: str = ""  # "separated", "settled", or "" (more rounds could change it)
    spread: Spread | None = None  # the pooled spread every interval is at least
    reference_accuracy: float | None = None
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    max_tie_gap: float = DEFAULT_MAX_TIE_GAP

    def summary(self) -> str:
        """'separated', or 'tie: A and B, broken by size' (the stop reason is the caller's)."""
        if self.winner is None:
            return "no candidate within the budget"
        if len(self.tie_set) == 1:
            return "separated"
        names = [c.name for c in self.tie_set]
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
        return f"tie: {listed}, broken by {', then '.join(self.broken_by)}"

    def estimate_of(self, name: str) -> Estimate:
        return next(v.estimate for v in self.verdicts if v.candidate.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner.name if self.winner else None,
            "fastest": self.fastest.name if self.fastest else None,
            "tie_set": [c.name for c in self.tie_set],
            "broken_by": self.broken_by,
            "decided": self.decided,
            "summary": self.summary(),
            "rule": {
                "reference_accuracy": self.reference_accuracy,
                "max_accuracy_drop": self.max_accuracy_drop,
                "max_tie_gap": self.max_tie_gap,
                **RULE,
            },
            "pooled_spread": None
            if self.spread is None
            else {"sd_log": round(self.spread.sd, 6), "df": self.spread.df, "source": self.spread.source},
            "candidates": [v.to_dict() for v in self.verdicts],
        }


def _finite(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None


def _over_budget(c: Candidate, reference: float | None, budget: float | None) -> str:
    """Why ``c`` is over the accuracy budget, or '' when it is not (or no budget applies)."""
    if budget is None or reference is None:
        return ""
    if c.accuracy is not None and c.accuracy >= reference - budget - 1e-12:
        return ""
    drop = "not measured" if c.accuracy is None else f"{(reference - c.accuracy) * 100:.2f} points below FP32"
    return f"accuracy {drop} (budget {budget * 100:.2f})"


def _tie_break(winner: Candidate, tied: list[Candidate]) -> list[str]:
    """The keys (size, accuracy, median) that set the winner apart from each other tied candidate, in rule order."""
    used = set()
    for other in tied:
        if other is winner:
            continue
        if other.size_bytes != winner.size_bytes:
            used.add("size")
        elif (other.accuracy or 0.0) != (winner.accuracy or 0.0):
            used.add("accuracy")
        else:
            used.add("median")
    return [key for key in ("size", "accuracy", "median") if key in used]


def pick(
    candidates: Sequence[Candidate],
    *,
    reference_accuracy: float | None,
    max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP,
    max_tie_gap: float = DEFAULT_MAX_TIE_GAP,
    floor: Spread | None = None,
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
    pooled = pooled_spread(c.rounds_ms for c in candidates)
    estimates = {c.name: estimate(c.rounds_ms, pooled, floor) for c in candidates}
    verdicts: dict[str, Verdict] = {}
    eligible: list[Candidate] = []
    for c in candidates:
        if not estimates[c.name].rounds:
            verdicts[c.name] = Verdict(c, estimates[c.name], "not measured", reason="no rounds")
        elif why := _over_budget(c, reference_accuracy, max_accuracy_drop):
            verdicts[c.name] = Verdict(c, estimates[c.name], "over budget", reason=why)
        else:
            eligible.append(c)
    result = Pick(None, None, spread=pooled, reference_accuracy=reference_accuracy,
                  max_accuracy_drop=max_accuracy_drop or 0.0, max_tie_gap=max_tie_gap)
    if eligible:
        fastest = min(eligible, key=lambda c: (estimates[c.name].median, c.size_bytes, c.name))
        best = estimates[fastest.name]
        tied = [c for c in eligible if c is fastest or not separated(best, estimates[c.name], max_tie_gap)]
        winner = min(tied, key=lambda c: (c.size_bytes, -(c.accuracy or 0.0), estimates[c.name].median, c.name))
        result.winner, result.fastest, result.tie_set = winner, fastest, tied
        result.broken_by = _tie_break(winner, tied)
        if len(tied) == 1:
            result.decided = "separated"
        elif all(settled(best, estimates[c.name], max_tie_gap) for c in tied):
            result.decided = "settled"
        for c in eligible:
            e = estimates[c.name]
            ratio = e.median / best.median if best.median > 0 else math.nan
            if c is winner:
                if len(tied) == 1:
                    why = "fastest, separated from the rest"
                elif c is fastest:
                    why = "fastest; won the tie break among the tied"
                else:
                    why = f"ties with the fastest ({fastest.name}); won the tie break"
                verdicts[c.name] = Verdict(c, e, "winner", ratio, why)
            elif c in tied:
                gap = f"{(ratio - 1) * 100:.1f}% slower" if ratio > 1 else "as fast"
                why = f"{gap} but within the noise of the fastest; {winner.name} won the tie break"
                verdicts[c.name] = Verdict(c, e, "tie", ratio, why)
            else:
                verdicts[c.name] = Verdict(c, e, "slower", ratio, f"{(ratio - 1) * 100:.1f}% slower, beyond the noise")
    order = {"winner": 0, "tie": 1, "slower": 2, "over budget": 3, "not measured": 4}
    result.verdicts = sorted(
        verdicts.values(), key=lambda v: (order[v.status], v.estimate.median if v.estimate.rounds else math.inf)
    )
    return result
