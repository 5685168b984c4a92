"""Which candidate wins on each device of a collection, and a device × candidate heatmap that shows why.

Per device and model, every succeeded run is a candidate for :func:`edge_opt.device.pick.pick` with one round (the run's
median; its calls say nothing about the noise between runs), its host accuracy and file size: the accuracy budget
is relative to that model's FP32 artifact, ties go to the smaller file. Whether two candidates tie is decided
by the device's run-to-run spread, learnt from its history (:func:`edge_opt.device.round_stats.history_spread` over
its past runs of the same artifacts); a device without enough history is judged by the tie gap alone, and the
table says which. Different devices may, and often do, get different winners.

The heatmap has one row per device and one column per artifact; a cell is the artifact's p50 divided by the
fastest p50 on that device (1.00 = fastest), the winner is framed and starred, the candidates tied with the
fastest have a dashed frame. Unlike grouped bars or labelled
points it stays legible at a dozen candidates and more: one cell each, the number written in it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from edge_opt.device.pick import DEFAULT_MAX_ACCURACY_DROP, Candidate, Pick, pick
from edge_opt.device.round_stats import GAP_ONLY, Spread, history_spread


def device_spread(runs: list[dict[str, Any]]) -> Spread:
    """A device's run-to-run spread from its history of these artifacts (each run's ``history_ms``, then the run),
    or :data:`~edge_opt.device.round_stats.GAP_ONLY` without enough of it."""
    series = [[*(r.get("history_ms") or []), r["p50_ms"]] for r in runs]
    return history_spread(series, "runs of these artifacts") or GAP_ONLY


def device_winners(
    rows: list[dict[str, Any]], max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP
) -> dict[tuple[str, str], Pick]:
    """(device, model) → the pick among that device's succeeded runs of that model."""
    by_device_model: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("state") == "SUCCEEDED" and r.get("p50_ms"):
            by_device_model[(r["device"], r.get("model", ""))].append(r)
    # The FP32 reference of each model: the best host accuracy among its FP32 artifacts (formats agree to 0.1%).
    reference: dict[str, float] = {}
    for r in rows:
        if r.get("precision") == "fp32" and r.get("host_accuracy") is not None:
            reference[r.get("model", "")] = max(reference.get(r.get("model", ""), 0.0), r["host_accuracy"])
    spreads = {device: device_spread([r for (d, _), rs in by_device_model.items() if d == device for r in rs])
               for device, _ in by_device_model}
    picks = {}
    for (device, model), runs in sorted(by_device_model.items()):
        candidates = [
            Candidate(r["artifact"], [r["p50_ms"]], r.get("host_accuracy"), int(r.get("size_bytes") or 0)) for r in runs
        ]
        picks[(device, model)] = pick(
            candidates, reference_accuracy=reference.get(model), max_accuracy_drop=max_accuracy_drop, floor=spreads[device]
        )
    return picks


def winners_table(picks: dict[tuple[str, str], Pick]) -> list[dict[str, Any]]:
    """One row per (device, model): the winner, the fastest, and how many candidates were in budget."""
    out = []
    for (device, model), p in picks.items():
        out.append(
            {
                "device": device,
                "model": model,
                "winner": p.winner.name if p.winner else None,
                "winner_p50_ms": round(p.estimate_of(p.winner.name).median, 4) if p.winner else None,
                "fastest": p.fastest.name if p.fastest else None,
                "tie_set": [c.name for c in p.tie_set],
                "decision": p.summary(),
                "spread": p.verdicts[0].estimate.method if p.verdicts else "",
                "in_budget": sum(v.status in ("winner", "tie", "slower") for v in p.verdicts),
                "candidates": len(p.verdicts),
            }
        )
    return out


def heatmap_png(rows: list[dict[str, Any]], picks: dict[tuple[str, str], Pick]) -> Any:
    """A matplotlib figure: devices × artifacts, p50 relative to each device's fastest, winners starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in rows if r.get("state") == "SUCCEEDED" and r.get("p50_ms")]
    devices = sorted({r["device"] for r in ok})
    artifacts = sorted({r["artifact"] for r in ok})
    grid = np.full((len(devices), len(artifacts)), np.nan)
    for r in ok:
        grid[devices.index(r["device"]), artifacts.index(r["artifact"])] = r["p50_ms"]
    relative = grid / np.nanmin(grid, axis=1, keepdims=True)
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.75 * len(artifacts) + 2.5), max(2.5, 0.45 * len(devices) + 1.8)), constrained_layout=True
    )
    top = max(1.0, float(np.nanmax(np.log2(relative))))
    image = ax.imshow(np.log2(relative), cmap="viridis_r", aspect="auto", vmin=0, vmax=top)
    for i, device in enumerate(devices):
        won = {p.winner.name for (d, _), p in picks.items() if d == device and p.winner}
        tied = {c.name for (d, _), p in picks.items() if d == device for c in p.tie_set}
        for j, artifact in enumerate(artifacts):
            value = relative[i, j]
            if math.isnan(value):
                continue
            star = artifact in won
            ax.text(j, i, f"{'★' if star else ''}{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 1.6 else "black", fontweight="bold" if star else "normal")
            if star:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
            elif artifact in tied:
                ax.add_patch(plt.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="red", linewidth=1,
                                           linestyle="--"))
    ax.set_xticks(range(len(artifacts)), artifacts, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(devices)), devices, fontsize=8)
    ax.set_title("p50 ÷ the device's fastest (★ = the pick: in budget, ties broken by size; dashed = tied with the "
                 "fastest by the device's run-to-run spread)", fontsize=8)
    bar = fig.colorbar(image, ax=ax, fraction=0.03)
    bar.set_label("log2 of the ratio", fontsize=7)
    return fig
