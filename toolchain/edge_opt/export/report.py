"""Human output of the toolchain (the export table) and the JSON result on stdout.

The JSON result's contract (envelope, statuses, exit codes 8 and 9) is :mod:`edge_agent.contract.result`, shared with the
agent's host commands.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from edge_agent.contract.result import ResultEnvelope, json_text
from rich.console import Console
from rich.table import Table

from edge_opt.export.metrics import LABELS, TOP1

if TYPE_CHECKING:  # the pipeline imports torch: commands that only print results should not pay for it
    from edge_opt.export.pipeline import ExportReport

def print_json(result: ResultEnvelope) -> None:
    sys.stdout.write(json_text(result) + "\n")
    sys.stdout.flush()


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _title(report: ExportReport) -> str:
    data = report.data
    if report.metric == TOP1 and data == "Fashion-MNIST test split":  # the built-in data keeps its familiar title
        what = f"accuracy on {report.eval_samples:,} Fashion-MNIST test images"
    elif report.metric == TOP1:
        what = f"accuracy on {report.eval_samples:,} items of {data}"
    else:
        what = f"output fidelity to FP32 on {report.eval_samples:,} items of {data}: SQNR in dB, higher is closer"
    return f"{report.model} → target {report.target.name}  ({what})"


def export_table(report: ExportReport) -> Table:
    batches = sorted({b for r in report.rows for b in r.latency_ms})
    table = Table(title=_title(report), title_justify="left")
    fidelity = report.metric != TOP1
    for col in ("precision", "format", "size MB", "×FP32", LABELS[report.metric], "cosine" if fidelity else "Δ pts"):
        table.add_column(col, justify="left" if col in ("precision", "format") else "right")
    for b in batches:
        table.add_column(f"b{b} ms", justify="right")
        table.add_column(f"b{b} ×", justify="right")
    qat_columns = any(_qat(row) for row in report.rows)
    if qat_columns:  # PTQ and QAT side by side, what was written, what QAT cost
        for col in ("PTQ", "QAT", "by", "QAT s"):
            table.add_column(col, justify="left" if col == "by" else "right")
    for row in report.rows:
        if fidelity:
            figure = [f"{row.score:.1f}", f"{row.metrics.get('cosine', float('nan')):.4f}"]
        else:
            delta = row.accuracy_delta
            figure = [
                f"{(row.accuracy or 0.0) * 100:.2f}%",
                "-" if row.precision.value == "fp32" or delta is None else f"{delta * 100:+.2f}",
            ]
        cells = [row.precision.value, row.format.value, f"{row.size_bytes / 1e6:.3f}", f"{row.size_ratio:.2f}", *figure]
        for b in batches:
            cells += [_ms(row.latency_ms.get(b)), f"{row.speedup.get(b, 0):.2f}×"]
        if qat_columns:
            cells += _qat_cells(_qat(row))
        table.add_row(*cells, style=None if row.written else "dim")
    return table


def _qat(row: object) -> dict | None:
    """The PTQ-vs-QAT record of an INT8 row (edge_opt.quant.qat), or None."""
    return ((getattr(row, "quantization", None) or {}).get("qat")) or None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _qat_cells(qat: dict | None) -> list[str]:
    if qat is None:
        return ["", "", "", ""]
    cost = "-" if qat.get("qat_accuracy") is None else f"{qat['seconds']:.0f}"
    return [_percent(qat.get("ptq_accuracy")), _percent(qat.get("qat_accuracy")), qat["written"].upper(), cost]


def print_export_report(report: ExportReport, console: Console) -> None:
    console.print(export_table(report))
    if any(not r.written for r in report.rows):
        console.print("[dim]dim rows: FP32 baselines measured for the ratios, not written (add --precision fp32)[/dim]")
    for row in report.rows:
        if row.path is not None:
            console.print(f"  {row.precision.value:<5} {row.format.value:<12} {row.path}  sha256 {row.sha256[:16]}…")
    console.print(
        f"[dim]latency: median of single calls on this host with {report.latency_threads} thread(s); "
        f"each artifact's manifest.json has the details. Written to {report.out_dir}[/dim]"
    )
    for row in report.rows:
        if (qat := _qat(row)) is not None:
            console.print(f"[cyan]qat:[/cyan] {row.precision.value} {row.format.value}: {qat['why']}")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    for name, why in report.refused.items():
        console.print(f"[red]refused, not written:[/red] {name}: {why}")
