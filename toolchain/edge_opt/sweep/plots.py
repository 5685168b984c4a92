"""The sweep's files: ``sweep.csv``, ``sweep.json`` and ``sweep.png`` (accuracy against size and latency, one line per
precision × format through the pruning amounts, in each format's registered colour; with QAT, PTQ against QAT).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from edge_agent.contract.result import strict_json

from edge_opt.formats.registry import FORMATS


def write_outputs(rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    flat = [
        {
            "model": r["model"],
            "pruning": r["pruning"],
            "precision": r["precision"],
            "format": r["format"],
            "written": r["written"],
            "size_mb": r["size_mb"],
            "accuracy": r["accuracy"],
            "metric": r.get("metric", "top1"),
            "score": r.get("score", r["accuracy"]),
            "accuracy_delta_to_unpruned_fp32": r.get("accuracy_delta_to_unpruned_fp32"),
            "latency_b1_ms": r["latency_p50_ms"].get("1"),
            "latency_b32_ms": r["latency_p50_ms"].get("32"),
            "sha256": r["sha256"],
            "path": r["path"],
            "target": r.get("target"),
            "quantized_by": r.get("quantized_by"),
            "ptq_accuracy": r.get("ptq_accuracy"),
            "qat_accuracy": r.get("qat_accuracy"),
            "qat_seconds": r.get("qat_seconds"),
        }
        for r in rows
    ]
    paths = {"csv": out / "sweep.csv", "json": out / "sweep.json", "plot": out / "sweep.png"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    paths["json"].write_text(strict_json(flat) + "\n", encoding="utf-8")
    plot(flat, paths["plot"])
    return paths


def figure(row: dict[str, Any]) -> float:
    """A row's headline figure in display units: accuracy in %, or SQNR in dB (data without labels)."""
    if row.get("metric", "top1") == "top1":
        return float(row["accuracy"]) * 100
    return float("nan") if row.get("score") is None else float(row["score"])


def figure_label(rows: list[dict[str, Any]]) -> str:
    return "test accuracy (%)" if all(r.get("metric", "top1") == "top1" for r in rows) else "SQNR vs FP32 (dB)"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against size and against latency; one line per precision × format through the pruning amounts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter


    with_qat = any(r.get("qat_accuracy") is not None for r in rows)
    fig, axes = plt.subplots(1, 3 if with_qat else 2, figsize=(18 if with_qat else 12, 4.8), constrained_layout=True)
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    colors = {name: fmt.color for name, fmt in FORMATS.items()}
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault((r["precision"], r["format"]), []).append(r)
    for (precision, fmt), points in sorted(series.items()):
        points.sort(key=lambda r: r["pruning"])
        style = {"marker": markers.get(precision, "o"), "color": colors.get(fmt, "gray"), "markersize": 7}
        dash = "-" if fmt == "onnx" else "--"
        axes[0].plot(
            [p["size_mb"] for p in points], [figure(p) for p in points], dash, label=f"{precision} {fmt}", **style
        )
        timed = [p for p in points if p["latency_b1_ms"] is not None]
        axes[1].plot([p["latency_b1_ms"] for p in timed], [figure(p) for p in timed], dash, **style)
        for p in points:
            if p["pruning"]:
                axes[0].annotate(
                    f"prune {p['pruning']:g}",
                    (p["size_mb"], figure(p)),
                    fontsize=7,
                    xytext=(3, -9),
                    textcoords="offset points",
                    color="dimgray",
                )
    label = figure_label(rows)
    axes[0].set(xlabel="model file size (MB, log)", ylabel=label, title=f"{label} vs size", xscale="log")
    axes[1].set(xlabel="host latency p50 at batch 1 (ms, log)", ylabel=label, title=f"{label} vs latency", xscale="log")
    for ax in axes[:2]:
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=7)
    axes[0].legend(title="precision / format", fontsize=8)
    if with_qat:
        qat_panel(axes[2], rows)
    fig.suptitle("edge-sweep: each line runs from unpruned to the largest pruning amount")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def qat_drops(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per INT8 row with a QAT figure: PTQ's and QAT's change against FP32 of the same pruning and format (points)."""
    fp32 = {(r["model"], r.get("target"), r["pruning"], r["format"]): r for r in rows if r["precision"] == "fp32"}
    out = []
    for r in rows:
        base = fp32.get((r["model"], r.get("target"), r["pruning"], r["format"]))
        if r["precision"] != "int8" or r.get("qat_accuracy") is None or base is None or base.get("accuracy") is None:
            continue
        out.append(
            {
                "model": r["model"],
                "target": r.get("target"),
                "pruning": r["pruning"],
                "format": r["format"],
                "ptq": (r["ptq_accuracy"] - base["accuracy"]) * 100,
                "qat": (r["qat_accuracy"] - base["accuracy"]) * 100,
                "written": r.get("quantized_by"),
            }
        )
    return out


def qat_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Where QAT pays: INT8's change against FP32 (same pruning, same format) by PTQ and by QAT, per case."""
    drops = qat_drops(rows)
    labels = [f"{d['model'].split(':')[-1]} {d['target']}\nprune {d['pruning']:g}, {d['format']}" for d in drops]
    xs = range(len(drops))
    ax.bar([x - 0.2 for x in xs], [d["ptq"] for d in drops], width=0.4, label="PTQ", color="tab:gray")
    ax.bar([x + 0.2 for x in xs], [d["qat"] for d in drops], width=0.4, label="QAT", color="tab:purple")
    for x, d in zip(xs, drops, strict=True):
        ax.annotate("written" if d["written"] == "qat" else "", (x + 0.2, d["qat"]), fontsize=6, ha="center",
                    xytext=(0, -9 if d["qat"] < 0 else 3), textcoords="offset points")  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(-0.5, color="tab:red", linewidth=0.8, linestyle="--", label="−0.5 (the default budget)")
    ax.set_xticks(list(xs), labels, fontsize=7, rotation=30, ha="right")
    ax.set(ylabel="INT8 accuracy − FP32 (points)", title="INT8 by PTQ and by QAT, against FP32")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
