"""Statistics for fleet results: a distribution-free confidence interval of the median, the compare rule, and
outlier devices.

Compare rule (per device and artifact, baseline vs candidate): with the raw latency samples of both runs, each
median gets a 95% confidence interval from order statistics (ranks n/2 ± 1.96·√n/2; no distribution assumed).
The candidate is a **regression** when its interval lies entirely above the baseline's *and* its median is at
least ``min_effect`` (default 5%) slower; an **improvement** is the mirror image; anything else is "same" (within
the measured noise). Runs without samples fall back to the ``min_effect`` threshold alone.

Outlier devices: devices are grouped with their peers (same CPU model and board); a device whose median latency,
relative to its peers' median on the same artifacts, exceeds ``outlier_ratio`` (default 1.5×) is flagged (a
throttling Pi, a busy box).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

Z95 = 1.959964
#: [min, max] of n samples covers the median with probability 1 - 2·0.5**n: at least 95% from n = 6.
MIN_SAMPLES_FOR_CI = 6


def median_ci(samples: list[float]) -> tuple[float, float, float]:
    """(low, median, high) of the median with ~95% coverage, from order statistics."""
    ordered = sorted(samples)
    n = len(ordered)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    if n < MIN_SAMPLES_FOR_CI:  # even [min, max] covers the median with less than 95%: no claim can be made
        return (-math.inf, statistics.median(ordered), math.inf)
    half = Z95 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return ordered[lo], statistics.median(ordered), ordered[hi]


def compare_run(
    baseline: dict[str, Any], candidate: dict[str, Any], min_effect: float = 0.05
) -> tuple[str, float, tuple[float, float], tuple[float, float]]:
    b_lo, b_mid, b_hi = median_ci(baseline.get("samples_ms") or [])
    c_lo, c_mid, c_hi = median_ci(candidate.get("samples_ms") or [])
    if math.isnan(b_mid) or math.isnan(c_mid):  # no samples: the p50 alone, threshold only
        b_mid, c_mid = baseline["p50_ms"], candidate["p50_ms"]
        b_lo = b_hi = b_mid
        c_lo = c_hi = c_mid
    change = c_mid / b_mid - 1 if b_mid else math.nan
    if change >= min_effect and c_lo > b_hi:
        verdict = "regression"
    elif change <= -min_effect and c_hi < b_lo:
        verdict = "improvement"
    else:
        verdict = "same"
    return verdict, change, (b_lo, b_hi), (c_lo, c_hi)


def peer_key(info: dict[str, Any] | None) -> str:
    info = info or {}
    return f"{info.get('cpu_model', '?')} | {info.get('board_model', '') or info.get('arch', '?')}"


def outlier_devices(rows: list[dict[str, Any]], ratio: float = 1.5) -> dict[str, float]:
    """Devices much slower than their peers: device → its median ratio to the peers' median."""
    by_peer_artifact: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    peers_of: dict[str, str] = {}
    for r in rows:
        if r.get("p50_ms"):
            key = peer_key(r.get("device_info"))
            peers_of[r["device"]] = key
            by_peer_artifact[(key, r["sha256"])][r["device"]] = r["p50_ms"]
    ratios: dict[str, list[float]] = defaultdict(list)
    for latencies in by_peer_artifact.values():
        if len(latencies) < 2:
            continue
        for device, p50 in latencies.items():
            others = [v for d, v in latencies.items() if d != device]
            ratios[device].append(p50 / statistics.median(others))
    flagged = {}
    for device, values in ratios.items():
        typical = statistics.median(values)
        if typical >= ratio:
            flagged[device] = typical
    return flagged
