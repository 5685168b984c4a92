"""``edge-sweep``: every precision × pruning amount × format, one table, CSV, JSON and a plot.

Each pruning amount is one full export (prune → fine-tune → FP16 / INT8 → validated artifacts) into
``OUT/p<amount>/``; the rows are then compared with the unpruned FP32 artifact of the same format. For SmallCNN
the reference guide's six published configurations are printed beside ours.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edge_opt.cli.command import Outcome, run_command

#: The reference guide's SmallCNN / Fashion-MNIST table: (precision, pruning) → (accuracy %, size MB).
GUIDE: dict[tuple[str, float], tuple[float, float]] = {
    ("fp32", 0.0): (89.0, 2.85),
    ("fp16", 0.0): (88.9, 1.43),
    ("int8", 0.0): (88.4, 0.78),
    ("fp32", 0.5): (87.2, 0.91),
    ("fp16", 0.5): (87.1, 0.46),
    ("int8", 0.5): (86.3, 0.24),
}


def run_sweep(config: Any, out: Path, amounts: Sequence[float]) -> list[dict[str, Any]]:
    from edge_opt.config import with_overrides
    from edge_opt.export.pipeline import run_export

    rows: list[dict[str, Any]] = []
    for amount in amounts:
        report = run_export(with_overrides(config, {"pruning.amount": amount}), out / f"p{round(amount * 100)}")
        for row in report.rows:
            entry = row.to_dict()
            entry["pruning"] = amount
            entry["model"] = report.model
            entry["target"] = report.target.name
            entry.update(_qat_axis(entry))
            rows.append(entry)
    baselines = {r["format"]: r for r in rows if r["pruning"] == 0.0 and r["precision"] == "fp32"}
    for r in rows:
        base = baselines.get(r["format"])
        if base is not None and r["accuracy"] is not None and base["accuracy"] is not None:
            r["accuracy_delta_to_unpruned_fp32"] = r["accuracy"] - base["accuracy"]
        if base is not None:
            r["size_ratio_to_unpruned_fp32"] = r["size_bytes"] / base["size_bytes"]
    return rows


def _qat_axis(entry: dict[str, Any]) -> dict[str, Any]:
    """How an INT8 row was quantized, and PTQ's and QAT's accuracy when QAT was part of its export (edge_opt.quant.qat)."""
    quant = entry.get("quantization") or {}
    qat = quant.get("qat") or {}
    method = quant.get("method", "ptq") if entry["precision"] == "int8" else None
    return {
        "quantized_by": method,
        "ptq_accuracy": qat.get("ptq_accuracy"),
        "qat_accuracy": qat.get("qat_accuracy"),
        "qat_seconds": qat.get("seconds"),
    }


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
    paths["json"].write_text(json.dumps(flat, indent=2) + "\n", encoding="utf-8")
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
    colors = {"onnx": "tab:blue", "torchscript": "tab:orange", "executorch": "tab:green"}
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


def guide_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="reference guide vs edge-opt (SmallCNN, full Fashion-MNIST test set)", title_justify="left")
    for col in ("configuration", "guide acc", "ours ONNX", "ours TorchScript", "guide MB", "ours MB (ONNX)", "beats guide"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    by_key = {(r["precision"], r["pruning"], r["format"]): r for r in rows}
    for (precision, amount), (acc, size) in GUIDE.items():
        onnx_row, ts_row = by_key.get((precision, amount, "onnx")), by_key.get((precision, amount, "torchscript"))
        if onnx_row is None:
            continue
        ours = [r["accuracy"] * 100 for r in (onnx_row, ts_row) if r is not None]
        beats = min(ours) >= acc and round(onnx_row["size_mb"], 2) <= size  # the guide rounds to 0.01 MB
        table.add_row(
            f"{precision.upper()}, {'no' if amount == 0 else amount} pruning",
            f"{acc:.1f}%",
            f"{onnx_row['accuracy'] * 100:.2f}%",
            f"{ts_row['accuracy'] * 100:.2f}%" if ts_row else "-",
            f"{size:.2f}",
            f"{onnx_row['size_mb']:.3f}",
            "yes" if beats else "no",
        )
    return table


def sweep_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="edge-sweep", title_justify="left")
    fidelity = figure_label(rows) != "test accuracy (%)"
    for col in ("pruning", "precision", "format", "size MB", "SQNR dB" if fidelity else "accuracy", "Δ vs unpruned FP32",
                "b1 ms", "b32 ms"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("precision", "format") else "right")
    with_qat = any(r.get("qat_accuracy") is not None or r.get("ptq_accuracy") is not None for r in rows)
    if with_qat:
        for col in ("PTQ", "QAT", "written"):
            table.add_column(col, justify="left" if col == "written" else "right")
    for r in sorted(rows, key=lambda r: (r["pruning"], r["format"], r["precision"])):
        delta = r.get("accuracy_delta_to_unpruned_fp32")
        lat = r["latency_p50_ms"]
        table.add_row(
            f"{r['pruning']:.2f}",
            r["precision"],
            r["format"],
            f"{r['size_mb']:.3f}",
            f"{figure(r):.1f}" if fidelity else f"{figure(r):.2f}%",
            "-" if delta is None else f"{delta * 100:+.2f}",
            f"{lat.get('1', float('nan')):.3f}",
            f"{lat.get('32', float('nan')):.3f}",
            *(_qat_cells(r) if with_qat else []),
        )
    return table


def _qat_cells(r: dict[str, Any]) -> list[str]:
    if r["precision"] != "int8":
        return ["", "", ""]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:.2f}%"

    return [pct(r.get("ptq_accuracy")), pct(r.get("qat_accuracy")), (r.get("quantized_by") or "").upper()]


def calibration_sweep(config: Any, out: Path, counts: Sequence[int]) -> list[dict[str, Any]]:
    """INT8 accuracy and calibration time (FX and ONNX Runtime) for each number of calibration batches."""
    from edge_opt.config import with_overrides
    from edge_opt.export.pipeline import run_export

    rows = []
    for count in counts:
        report = run_export(with_overrides(config, {"calibration_batches": count, "precisions": ["int8"]}), out / f"cal{count}")
        for row in report.rows:
            if row.precision.value == "int8":
                rows.append(
                    {
                        "calibration_batches": count,
                        "format": row.format.value,
                        "accuracy": row.accuracy,
                        "metric": row.metric,
                        "score": row.score,
                        "accuracy_delta_to_fp32": row.accuracy_delta,
                        "calibration_seconds": (row.quantization or {}).get("calibration_seconds"),
                        "images": count * config.data.batch_size,
                    }
                )
    return rows


def calibration_table(rows: list[dict[str, Any]], method: str) -> Table:
    table = Table(title=f"INT8 accuracy against calibration batches ({method})", title_justify="left")
    fidelity = figure_label(rows) != "test accuracy (%)"
    for col in ("batches", "images", "format", "SQNR dB" if fidelity else "accuracy", "Δ vs FP32", "calibration s"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in rows:
        delta = r["accuracy_delta_to_fp32"]
        table.add_row(
            str(r["calibration_batches"]),
            str(r["images"]),
            r["format"],
            f"{figure(r):.1f}" if fidelity else f"{figure(r):.2f}%",
            "-" if delta is None else f"{delta * 100:+.2f}",
            f"{r['calibration_seconds']:.2f}",
        )
    return table


def sensitivity_report(config: Any, out: Path, top: int) -> dict[str, Any]:
    """Per-layer INT8 sensitivity (FX and ONNX Runtime), then what keeping the worst layers in float buys back."""
    import tempfile

    import numpy as np

    from edge_opt.config import with_overrides
    from edge_opt.export.pipeline import run_export
    from edge_opt.export.prepare import prepare_model
    from edge_opt.formats.writers import export_onnx
    from edge_opt.quant.ort import quantize_onnx
    from edge_opt.quant.sensitivity import fx_sensitivity, onnx_sensitivity
    from edge_opt.targets import resolve_target

    profile = resolve_target(config.target)
    with tempfile.TemporaryDirectory(prefix="edge-opt-sens-") as tmp:
        ctx = prepare_model(config, profile, Path(tmp))
        inputs = next(ctx.eval_split.batches(ctx.spec.preprocessing, min(512, len(ctx.eval_split))))[0]
        base_sqnr, fx_layers = fx_sensitivity(
            ctx.spec.module, ctx.calibration, inputs, profile.torch_engine, config.quantization.fx_observer
        )
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(ctx.spec.module, ctx.calibration[0][:1], fp32, opset=config.export.opset)
        batches = [x.numpy() for x in ctx.calibration]
        quantize_onnx(fp32, int8, batches, profile, method=config.quantization.ort_calibration)
        onnx_layers = onnx_sensitivity(fp32, int8, [np.ascontiguousarray(batches[0][:64])])
    buyback = []
    keep_modules = tuple(layer.name for layer in fx_layers[:top])
    keep_nodes = tuple(layer.name for layer in onnx_layers[:top])
    for label, modules, nodes in (("full INT8", (), ()), (f"top {top} kept in float", keep_modules, keep_nodes)):
        overrides = {
            "precisions": ["int8"],
            "quantization.keep_float": list(modules),
            "quantization.keep_float_nodes": list(nodes),
        }
        report = run_export(with_overrides(config, overrides), out / ("keep0" if not modules else f"keep{top}"))
        for row in report.rows:
            buyback.append(
                {
                    "variant": label,
                    "precision": row.precision.value,
                    "format": row.format.value,
                    "accuracy": row.accuracy,
                    "metric": row.metric,
                    "score": row.score,
                    "latency_b1_ms": row.latency_ms.get(1),
                }
            )
    return {
        "fx_full_int8_logits_sqnr_db": base_sqnr,
        "fx_layers": [layer.__dict__ for layer in fx_layers],
        "onnx_layers": [layer.__dict__ for layer in onnx_layers],
        "kept_modules": list(keep_modules),
        "kept_nodes": list(keep_nodes),
        "buyback": buyback,
    }


def print_sensitivity(console: Console, result: dict[str, Any], limit: int = 10) -> None:
    fx = Table(
        title=f"FX INT8: logits SQNR {result['fx_full_int8_logits_sqnr_db']:.1f} dB; keeping one layer in float gives",
        title_justify="left",
    )
    for col in ("module", "logits SQNR dB", "gain dB"):
        fx.add_column(col, justify="left" if col == "module" else "right")
    for layer in result["fx_layers"][:limit]:
        fx.add_row(layer["name"], f"{layer['sqnr_db']:.1f}", f"{layer['gain_db']:+.1f}")
    console.print(fx)
    ort_table = Table(title="ONNX Runtime INT8: activation SQNR against FP32, worst first", title_justify="left")
    for col in ("node", "SQNR dB"):
        ort_table.add_column(col, justify="left" if col == "node" else "right")
    for layer in result["onnx_layers"][:limit]:
        ort_table.add_row(layer["name"], f"{layer['sqnr_db']:.1f}")
    console.print(ort_table)
    buy = Table(title="what keeping the most sensitive layers in float buys back", title_justify="left")
    fidelity = figure_label(result["buyback"]) != "test accuracy (%)"
    for col in ("variant", "format", "SQNR dB" if fidelity else "accuracy", "b1 ms"):
        buy.add_column(col, justify="left" if col in ("variant", "format") else "right")
    for r in result["buyback"]:
        if r["precision"] == "int8":
            shown = f"{figure(r):.1f}" if fidelity else f"{figure(r):.2f}%"
            buy.add_row(r["variant"], r["format"], shown, f"{r['latency_b1_ms']:.3f}")
    console.print(buy)
    console.print(
        f"[dim]kept in float: modules {result['kept_modules']} (FX); nodes {result['kept_nodes']} (ONNX). "
        "Use edge-export --keep-float MODULE, or quantization.keep_float / keep_float_nodes in the config.[/dim]"
    )


def _counts(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid batch counts {value!r}; use e.g. 4,8,16,32,64") from None


def _amounts(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid amounts {value!r}; use e.g. 0,0.5") from None


def main(argv: Sequence[str] | None = None) -> int:
    from edge_opt import progress, quiet
    from edge_opt.cli.export import build_parser

    parser = build_parser(device=False)
    parser.prog = "edge-sweep"
    parser.description = "Every precision × pruning amount × format: table, CSV, JSON and a plot (edge-export's flags apply)."
    parser.add_argument("--amounts", type=_amounts, help="pruning amounts, e.g. 0,0.25,0.5 (default: config pruning.amounts)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--calibration-sweep", type=_counts, metavar="N,N,...", help="INT8 accuracy vs calibration batches")
    mode.add_argument("--sensitivity", action="store_true", help="per-layer INT8 sensitivity and keep-in-float buy-back")
    parser.add_argument("--top", type=int, default=2, help="with --sensitivity: layers to keep in float (default 2)")
    parser.set_defaults(out=Path("sweep"))
    args = parser.parse_args(argv)
    quiet.show_all_warnings(args.verbose)
    progress.set_enabled(not args.quiet)
    return run_command("edge-sweep", "sweep", lambda: _sweep(args), json_output=args.json, verbose=args.verbose)


def _sweep(args: argparse.Namespace) -> Outcome:
    from edge_opt.cli.export import config_from_args

    config = config_from_args(args)
    if args.precision is None:
        from edge_opt.config import with_overrides

        config = with_overrides(config, {"precisions": ["fp32", "fp16", "int8"]})
    if args.calibration_sweep or args.sensitivity:
        return _special(args, config)
    amounts = args.amounts or config.pruning.amounts
    if 0.0 not in amounts:
        amounts = (0.0, *amounts)  # the unpruned FP32 baseline every row is compared with
    rows = run_sweep(config, args.out, amounts)
    paths = write_outputs(rows, args.out)
    if not args.json:
        console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
        console.print(sweep_table(rows))
        if rows and rows[0]["model"] == "smallcnn":
            console.print(guide_table(rows))
        console.print(f"[dim]wrote {paths['csv']}, {paths['json']}, {paths['plot']}[/dim]")
    return Outcome({"rows": rows, "files": {k: str(v) for k, v in paths.items()}})


def _special(args: argparse.Namespace, config: Any) -> Outcome:
    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.calibration_sweep:
        rows = calibration_sweep(config, args.out, args.calibration_sweep)
        (args.out / "calibration.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        if not args.json:
            method = f"FX {config.quantization.fx_observer.value}, ONNX Runtime {config.quantization.ort_calibration.value}"
            console.print(calibration_table(rows, method))
        return Outcome({"calibration": rows})
    result = sensitivity_report(config, args.out, args.top)
    (args.out / "sensitivity.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not args.json:
        print_sensitivity(console, result)
    return Outcome({"sensitivity": result})


if __name__ == "__main__":
    sys.exit(main())
