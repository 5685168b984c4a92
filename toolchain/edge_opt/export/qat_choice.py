"""PTQ or QAT: the INT8 artifact an export writes when quantization-aware training is asked for.

:func:`build` is what the pipeline calls for every artifact. For INT8 with ``quantization.qat.mode`` not ``off``
it builds the post-training (PTQ) artifact and, always (``always``) or when PTQ loses more than the budget
(``on-need``), the QAT artifact from the format's QAT model (:mod:`edge_opt.quant.qat`, trained once per family
and export); both are evaluated on the evaluation split as the pipeline evaluates artifacts, and the more accurate
one is written (a tie keeps PTQ). The quantization record says which, why, and both figures.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edge_opt import progress
from edge_opt.config import QatMode
from edge_opt.export.prepare import ExportContext
from edge_opt.formats.base import Built, Format
from edge_opt.formats.evaluation import REFERENCE_SEMANTICS, accuracy_of, evaluation_mode, predict
from edge_opt.options import Precision
from edge_opt.quant.qat import qat_model


def _build_qat(ctx: ExportContext, fmt: Format, path: Path) -> Built:
    """The QAT artifact of ``fmt`` at ``path``, built by the format from the QAT model of its family."""
    model, record = qat_model(ctx, fmt.qat_family)
    return fmt.build_qat(ctx, model, record, path)


def _accuracy(ctx: ExportContext, fmt: Format, built: Built, path: Path) -> float:
    """Top-1 of an artifact on the whole evaluation split, evaluated as the pipeline evaluates it."""
    mode = fmt.evaluation_mode(evaluation_mode(ctx.profile.name, quantized=True, host_target=ctx.host_profile))
    semantics = fmt.semantics_runner(path) if mode == REFERENCE_SEMANTICS else None
    runner = semantics if semantics is not None else built.runner
    logits = predict(runner, ctx.eval_split, ctx.spec.preprocessing, ctx.config.data.batch_size)
    return accuracy_of(logits, ctx.labels)


def build(ctx: ExportContext, fmt: Format, precision: Precision, path: Path) -> Built:
    """The pipeline's build call: the format's build, or for INT8 with QAT asked, the better of PTQ and QAT."""
    settings = ctx.config.quantization.qat
    builder = fmt.build
    if precision is not Precision.INT8 or settings.mode is QatMode.OFF:
        return builder(ctx, precision, path)
    if settings.mode is QatMode.ALWAYS:
        qat_model(ctx, fmt.qat_family)  # first: a model the QAT path cannot trace is refused before anything else is built
    ptq_path = ctx.work / f"ptq-{fmt.name}" / path.name
    ptq_path.parent.mkdir(parents=True, exist_ok=True)
    ptq = builder(ctx, precision, ptq_path)
    fp32 = accuracy_of(ctx.fp32_logits, ctx.labels)
    ptq_accuracy = _accuracy(ctx, fmt, ptq, ptq_path)
    drop = (fp32 - ptq_accuracy) * 100
    decision: dict[str, Any] = {
        "mode": settings.mode.value,
        "fp32_accuracy": round(fp32, 5),
        "ptq_accuracy": round(ptq_accuracy, 5),
        "qat_accuracy": None,
        "max_accuracy_drop_points": settings.max_accuracy_drop,
        "ptq": ptq.quantization,
    }
    label = f"int8 {fmt.name}"
    if settings.mode is QatMode.ON_NEED and drop <= settings.max_accuracy_drop:
        decision.update(written="ptq", why=f"PTQ lost {drop:.2f} points, within the budget of {settings.max_accuracy_drop:g}: "
                        "QAT not run")  # fmt: skip
        progress.status(f"{label}: {decision['why']}")
        return _written(fmt, ptq, ptq_path, path, "ptq", decision)
    if settings.mode is QatMode.ON_NEED:
        progress.status(f"{label}: PTQ lost {drop:.2f} points, over the budget of {settings.max_accuracy_drop:g}: QAT")
    qat_path = ctx.work / f"qat-{fmt.name}" / path.name
    qat_path.parent.mkdir(parents=True, exist_ok=True)
    qat = _build_qat(ctx, fmt, qat_path)
    qat_accuracy = _accuracy(ctx, fmt, qat, qat_path)
    decision["qat_accuracy"] = round(qat_accuracy, 5)
    decision.update({k: (qat.quantization or {})[k] for k in ("epochs", "train_items", "train_seconds", "seconds_per_epoch",
                                                        "seconds")})  # fmt: skip
    because = "on-need: PTQ lost more than the budget; " if settings.mode is QatMode.ON_NEED else ""
    figures = (
        f"QAT {qat_accuracy * 100:.2f}%, PTQ {ptq_accuracy * 100:.2f}%, FP32 {fp32 * 100:.2f}% on the evaluation split; "
        f"QAT: {decision['epochs']} epoch(s) on {decision['train_items']:,} training items, {decision['seconds']:.0f} s"
    )
    if qat_accuracy > ptq_accuracy:
        decision.update(written="qat", why=f"{because}QAT written, it is more accurate ({figures})")
        chosen, chosen_path, method = qat, qat_path, "qat"
    else:
        decision.update(written="ptq", why=f"{because}PTQ written, QAT is not more accurate ({figures})")
        chosen, chosen_path, method = ptq, ptq_path, "ptq"
    progress.status(f"{label}: {decision['why']}")
    return _written(fmt, chosen, chosen_path, path, method, decision)


def _written(fmt: Format, built: Built, source: Path, path: Path, method: str, decision: dict[str, Any]) -> Built:
    """Put the chosen file where the pipeline staged it; its record says how it was quantized and what was compared."""
    shutil.copyfile(source, path)
    own = dict(built.quantization or {})
    if method == "ptq":
        decision = {k: v for k, v in decision.items() if k != "ptq"}  # the record itself is PTQ's
    built.quantization = {**own, "method": method, "qat": decision}
    built.runner = fmt.reloaded(built, path)
    return built


def accuracy_figures(row_quantization: dict[str, Any] | None) -> tuple[float | None, float | None] | None:
    """(PTQ, QAT) accuracy of an artifact's record, or None when QAT was not part of its export."""
    qat = (row_quantization or {}).get("qat")
    if not qat:
        return None
    return qat.get("ptq_accuracy"), qat.get("qat_accuracy")
