"""Outlier devices: a device much slower than its peers (same CPU model and board) on the same artifacts.

Devices are grouped with their peers; a device whose median latency, relative to its peers' median on the same
artifacts, reaches ``ratio`` (default 1.5×) is flagged (a throttling Pi, a busy box). Comparing runs over time is
:mod:`edge_opt.device.round_stats`'s business.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any


def peer_key(info: dict[str, Any] | None) -> str:
    info = info or {}
    return f"{info.get('cpu_model', '?')} | {info.get('board_model', '') or info.get('arch', '?')}"


def outlier_devices(rows: list[dict[str, Any]], ratio: float = 1.5) -> dict[str, float]:
    """Devices much slower than their peers: device → its median ratio to the peers' median."""
    by_peer_artifact: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.get("p50_ms"):
            key = peer_key(r.get("device_info"))
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
