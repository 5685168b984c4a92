"""``edge-fleet compare``'s rule applied to two collections: each successful candidate run matched with the baseline's
successful run of the same bytes on the same device, and its verdict; then the table that shows them.

The rule is :func:`edge_opt.device.round_stats.compare`: the threshold is ``--min-effect`` unless the device has
enough past runs of the artifact, whose run-to-run spread then sets it (tighter or wider).
"""

from __future__ import annotations

import argparse
from typing import Any

from edge_agent.contract.result import EXIT_REGRESSION
from rich.console import Console
from rich.table import Table

from edge_opt.device.round_stats import compare, history_spread


def match_runs(
    base: dict[tuple[str, str], dict[str, Any]], cand_rows: list[dict[str, Any]], min_effect: float, *, use_history: bool
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The verdicts of the candidate's successful runs against ``base`` (keyed by device and sha256), and the runs
    with no successful baseline run of the same bytes on the same device."""
    verdicts: list[dict[str, Any]] = []
    unmatched: list[dict[str, str]] = []
    for r in cand_rows:
        b = base.get((r["device"], r["sha256"]))
        if r["state"] != "SUCCEEDED":
            continue
        if b is None:
            unmatched.append({"device": r["device"], "artifact": r["artifact"], "sha256": r["sha256"]})
            continue
        spread = None if not use_history else history_spread([r["history_ms"]], "past runs of the artifact on the device")
        change = compare(b["p50_ms"], r["p50_ms"], spread, min_effect)
        verdicts.append(
            {
                "device": r["device"],
                "artifact": r["artifact"],
                "baseline_p50_ms": b["p50_ms"],
                "candidate_p50_ms": r["p50_ms"],
                "change": change.change,
                "verdict": change.verdict,
                "threshold": change.threshold,
                "threshold_basis": change.basis,
                "threshold_note": change.note,
                "history_runs": len(r["history_ms"]),
                "history_disturbed": r["history_disturbed"],
                "disturbed": [which for which, run in (("baseline", b), ("candidate", r)) if run.get("disturbed")],
            }
        )
    return verdicts, unmatched


def print_compare(
    console: Console,
    args: argparse.Namespace,
    verdicts: list[dict[str, Any]],
    outliers: dict[str, float],
    bases: dict[str, int],
    disturbed: int,
    unmatched: list[dict[str, str]],
) -> None:
    """The compare table (with -q: the regressions only), then outliers, thresholds and what was not compared."""
    table = Table(title=f"{args.candidate} against {args.baseline}", title_justify="left")
    for col in ("device", "artifact", "baseline p50", "candidate p50", "change", "threshold", "verdict", "note"):
        table.add_column(col)
    for v in verdicts:
        if args.quiet and v["verdict"] != "regression":
            continue
        color = {"regression": "red", "improvement": "green"}.get(v["verdict"], "white")
        basis = {"default": "", "history: tightened": " (history: tighter)", "history: widened": " (history: wider)"}
        note = f"disturbed {' and '.join(v['disturbed'])} run" if v["disturbed"] else ""
        table.add_row(
            v["device"],
            v["artifact"],
            f"{v['baseline_p50_ms']:.3f}",
            f"{v['candidate_p50_ms']:.3f}",
            f"{v['change'] * 100:+.1f}%",
            f"±{v['threshold'] * 100:.1f}%{basis[v['threshold_basis']]}",
            f"[{color}]{v['verdict']}[/{color}]",
            note,
        )
    if table.rows:
        console.print(table)
    for device, ratio in outliers.items():
        console.print(f"[yellow]outlier device[/yellow] {device}: {ratio:.1f}× slower than its peers in {args.candidate}")
    regressions = sum(v["verdict"] == "regression" for v in verdicts)
    if regressions:
        console.print(f"[red]{regressions} regression(s)[/red]: exit code {EXIT_REGRESSION}")
    if args.quiet:
        return
    console.print(
        f"thresholds: {bases['default']} --min-effect {args.min_effect * 100:g}% (too little history), "
        f"{bases['history: tightened']} tightened and {bases['history: widened']} widened by the device's history"
    )
    if disturbed:
        console.print(f"[yellow]{disturbed} comparison(s) involve a run the device reported disturbed[/yellow] (see note)")
    if unmatched:
        note = f"{len(unmatched)} run(s) of {args.candidate} have no baseline in {args.baseline} (other bytes or devices)"
        console.print(f"[yellow]{note}[/yellow]")
