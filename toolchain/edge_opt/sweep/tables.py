"""The sweep's terminal tables: the sweep itself, the reference guide's SmallCNN figures beside ours, the calibration
sweep and the sensitivity report.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from edge_opt.sweep.plots import figure, figure_label

#: The reference guide's SmallCNN / Fashion-MNIST table: (precision, pruning) → (accuracy %, size MB).
GUIDE: dict[tuple[str, float], tuple[float, float]] = {
    ("fp32", 0.0): (89.0, 2.85),
    ("fp16", 0.0): (88.9, 1.43),
    ("int8", 0.0): (88.4, 0.78),
    ("fp32", 0.5): (87.2, 0.91),
    ("fp16", 0.5): (87.1, 0.46),
    ("int8", 0.5): (86.3, 0.24),
}


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
