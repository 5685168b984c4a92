"""The sweeps behind ``edge-sweep``: full exports over pruning amounts, over calibration batch counts, and the per-layer
INT8 sensitivity with what keeping the worst layers in float buys back.

Each pruning amount is one full export (prune → fine-tune → FP16 / INT8 → validated artifacts) into
``OUT/p<amount>/``; the rows are then compared with the unpruned FP32 artifact of the same format.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_opt.config import Config, with_overrides
from edge_opt.export.pipeline import run_export
from edge_opt.export.prepare import prepare_model
from edge_opt.formats.onnx import export_onnx
from edge_opt.quant.ort import quantize_onnx
from edge_opt.quant.sensitivity import fx_sensitivity, onnx_sensitivity
from edge_opt.targets import resolve_target


def run_sweep(config: Config, out: Path, amounts: Sequence[float]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for amount in amounts:
        report = run_export(with_overrides(config, {"pruning.amount": amount}), out / f"p{round(amount * 100)}")
        for row in report.rows:
            entry = row.to_dict()
            entry["pruning"] = amount
            entry["model"] = report.model
            entry["target"] = report.target.name
            entry.update(qat_axis(entry))
            rows.append(entry)
    baselines = {r["format"]: r for r in rows if r["pruning"] == 0.0 and r["precision"] == "fp32"}
    for r in rows:
        base = baselines.get(r["format"])
        if base is not None and r["accuracy"] is not None and base["accuracy"] is not None:
            r["accuracy_delta_to_unpruned_fp32"] = r["accuracy"] - base["accuracy"]
        if base is not None:
            r["size_ratio_to_unpruned_fp32"] = r["size_bytes"] / base["size_bytes"]
    return rows


def qat_axis(entry: dict[str, Any]) -> dict[str, Any]:
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


def calibration_sweep(config: Config, out: Path, counts: Sequence[int]) -> list[dict[str, Any]]:
    """INT8 accuracy and calibration time (FX and ONNX Runtime) for each number of calibration batches."""
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


def sensitivity_report(config: Config, out: Path, top: int) -> dict[str, Any]:
    """Per-layer INT8 sensitivity (FX and ONNX Runtime), then what keeping the worst layers in float buys back."""
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
