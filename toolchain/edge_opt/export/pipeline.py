"""The export job behind ``edge-export``: model → FP16 / INT8 → every format → validated artifacts.

The model and its data are prepared once (:mod:`edge_opt.export.prepare`). For every (precision, format) the format's
builder (:mod:`edge_opt.formats`) writes the model file into a staging folder and loads it back with its own
runtime; here it is then compared with the model it came from on real test images (the parity gates of
:mod:`edge_opt.export.validation`), evaluated on the test split, timed on this host, and only then published with its
manifest (:mod:`edge_opt.export.manifest`). FP32 artifacts of the same formats are always
built as the baseline of the size, accuracy and latency ratios, and written only when FP32 is asked for.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edge_agent.contract.files import write_durably
from edge_agent.contract.result import strict_json

from edge_opt import evalset, progress
from edge_opt.config import Config
from edge_opt.errors import ExportError
from edge_opt.export import qat_choice
from edge_opt.export.artifact import staged_artifact
from edge_opt.export.manifest import build_manifest
from edge_opt.export.metrics import TOP1, metrics_of
from edge_opt.export.prepare import (
    ExportContext,
    default_statistics_warning,
    evaluation_sets_kept_only_with_artifacts,
    prepare_model,
    write_device_eval_set,
)
from edge_opt.export.validation import check_parity
from edge_opt.formats.evaluation import (
    REFERENCE_SEMANTICS,
    Parity,
    accuracy_of,
    evaluation_mode,
    host_latency,
    parity,
    predict,
)
from edge_opt.formats.registry import ArtifactFormat, get_format
from edge_opt.options import Precision
from edge_opt.quant.fx import check_backend
from edge_opt.quiet import known_warnings_silenced
from edge_opt.targets import TargetProfile, resolve_target

#: An INT8 accuracy drop (fraction) beyond which the summary points at the sensitivity report.
INT8_DROP_NOTE = 0.01


@dataclass
class ArtifactRow:
    """One line of the summary table."""

    precision: Precision
    format: ArtifactFormat
    size_bytes: int
    accuracy: float | None  # top-1 on labelled data for a classifier; None: see ``metrics`` (fidelity vs FP32)
    parity_vs_source: Parity
    parity_vs_fp32: Parity
    latency_ms: dict[int, float]
    sha256: str
    path: Path | None  # None: a baseline that was measured but not written
    size_ratio: float = 1.0
    accuracy_delta: float | None = 0.0
    speedup: dict[int, float] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    #: How accuracy and parity were computed: edge_opt.formats.evaluation.HOST_KERNELS or REFERENCE_SEMANTICS.
    evaluation_mode: str = "host-kernels"
    #: In reference-semantics mode (ONNX): what this host's optimised kernels give, and how far they are from it.
    host_kernels_accuracy: float | None = None
    host_kernels_vs_semantics: Parity | None = None
    #: The evaluation sets a device checks this artifact with (edge_opt.evalset), when they were written.
    device_evaluation: dict[str, Any] | None = None
    #: Every figure the data allows (edge_opt.export.metrics), and which one is the headline.
    metrics: dict[str, float] = field(default_factory=dict)
    metric: str = TOP1

    @property
    def written(self) -> bool:
        return self.path is not None

    @property
    def score(self) -> float:
        """The headline figure: top-1 accuracy (fraction) or SQNR in dB against FP32."""
        return self.metrics.get(self.metric, float("nan")) if self.metrics else float(self.accuracy or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision.value,
            "format": self.format.value,
            "written": self.written,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "size_mb": round(self.size_bytes / 1e6, 4),
            "size_ratio_to_fp32": round(self.size_ratio, 4),
            "accuracy": None if self.accuracy is None else round(self.accuracy, 5),
            "accuracy_delta_to_fp32": None if self.accuracy_delta is None else round(self.accuracy_delta, 5),
            "metric": self.metric,
            "score": _rounded(self.score),
            "metrics": {k: _rounded(v) for k, v in self.metrics.items()},
            "latency_p50_ms": {str(b): round(v, 4) for b, v in self.latency_ms.items()},
            "speedup_vs_fp32": {str(b): round(v, 3) for b, v in self.speedup.items()},
            "parity_vs_source": self.parity_vs_source.to_dict(),
            "parity_vs_fp32": self.parity_vs_fp32.to_dict(),
            "quantization": self.quantization,
            "evaluation_mode": self.evaluation_mode,
            "host_kernels_accuracy": None if self.host_kernels_accuracy is None else round(self.host_kernels_accuracy, 5),
            "host_kernels_vs_semantics": (
                None if self.host_kernels_vs_semantics is None else self.host_kernels_vs_semantics.to_dict()
            ),
        }


def _rounded(value: float) -> float | None:
    return round(value, 5) if math.isfinite(value) else None


@dataclass
class ExportReport:
    model: str
    target: TargetProfile
    out_dir: Path
    eval_samples: int
    reference_accuracy: float | None  # FP32 eager top-1; None when the metric is fidelity (no labels / not a classifier)
    rows: list[ArtifactRow]
    notes: list[str]
    latency_threads: int = 1
    #: Candidates refused by their export or gates: artifact name → why (the fix included).
    refused: dict[str, str] = field(default_factory=dict)
    #: The headline metric (edge_opt.export.metrics: top1 or sqnr_db) and the data it was measured on.
    metric: str = TOP1
    data: str = "Fashion-MNIST test split"
    data_record: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "refused": self.refused,
            "model": self.model,
            "target": self.target.name,
            "out_dir": str(self.out_dir),
            "eval_samples": self.eval_samples,
            "latency_threads": self.latency_threads,
            "metric": self.metric,
            "data": {"description": self.data, **self.data_record, "class_names": self.class_names},
            "fp32_eager_accuracy": None if self.reference_accuracy is None else round(self.reference_accuracy, 5),
            "artifacts": [r.to_dict() for r in self.rows],
            "notes": self.notes,
        }


def run_export(
    config: Config,
    out_dir: Path,
    *,
    precisions: tuple[Precision, ...] | None = None,
    formats: tuple[ArtifactFormat, ...] | None = None,
    keep_going: bool = True,
) -> ExportReport:
    """Export every requested (precision, format) of the configured model into ``out_dir``.

    With ``keep_going`` (the default) an artifact refused by its export or its gates (ExportError; a QuantizeError,
    such as a --keep-float name that matches no layer, still stops the command) is left out and named in
    ``ExportReport.refused`` (a format whose FP32 baseline is refused leaves out that format), and the export fails
    only when nothing is left; without it the first refusal stops the export.

    Raises:
        ToolchainError: data, model, quantization or validation problems, each with a one-line message.
    """
    precisions = precisions or config.precisions
    formats = formats or config.formats
    profile = resolve_target(config.target)
    if Precision.INT8 in precisions:
        check_backend(profile.torch_engine)
    with (
        known_warnings_silenced(),
        tempfile.TemporaryDirectory(prefix="edge-opt-") as work,
        evaluation_sets_kept_only_with_artifacts(out_dir),
    ):
        ctx = prepare_model(config, profile, Path(work))
        ctx.device_eval = write_device_eval_set(ctx, out_dir)
        notes: list[str] = []
        if warning := default_statistics_warning(config, ctx.spec):
            progress.status(f"[yellow]warning:[/yellow] {warning}")
            notes.append(warning)
        if ctx.spec.random_init:
            notes.append(
                f"{ctx.spec.name} has random weights (no --checkpoint): accuracy figures are meaningless; FP16 / INT8 "
                "artifacts are not held to top-1 agreement, and ONNX INT8 only to finite outputs"
            )
        rows, refused = _build_all(ctx, precisions, formats, out_dir, keep_going=keep_going)
        if keep_going and not any(row.written for row in rows):
            reasons = "; ".join(f"{k}: {v}" for k, v in refused.items())
            raise ExportError(f"every artifact was refused, nothing was written: {reasons}")
        if Precision.FP16 in precisions:
            notes.append("FP16 halves the size; CPUs without FP16 kernels run it no faster (often slower) than FP32")
        notes += _evaluation_notes(ctx, rows)
        for row in rows:
            drop = row.accuracy_delta
            if row.precision is Precision.INT8 and drop is not None and drop < -INT8_DROP_NOTE and not ctx.spec.random_init:
                notes.append(
                    f"INT8 {row.format.value} lost {-drop * 100:.2f} points: `edge-sweep --sensitivity` "
                    "(same flags) lists the layers INT8 hurts most and what keeping them in float buys back; "
                    "or raise --calibration-batches, or fine-tune with quantization in the loop (--qat)"
                )
    rows.sort(key=lambda r: (list(Precision).index(r.precision), r.format.value))
    report = ExportReport(
        ctx.spec.name,
        profile,
        out_dir,
        len(ctx.eval_split),
        _accuracy(ctx, ctx.fp32_logits),
        rows,
        notes,
        config.benchmark.threads,
        refused,
        ctx.metric,
        ctx.data.description,
        ctx.data.record,
        list(ctx.data.class_names) if ctx.data.class_names else None,
    )
    write_summary(out_dir, report.to_dict())
    return report


def _accuracy(ctx: ExportContext, outputs: np.ndarray) -> float | None:
    """Top-1 on the first ``len(outputs)`` evaluation items; None when the metric is not accuracy."""
    if ctx.metric != TOP1 or ctx.labels is None:
        return None
    return accuracy_of(outputs, ctx.labels[: len(outputs)])


def artifact_name(ctx: ExportContext, precision: Precision, fmt: ArtifactFormat) -> str:
    """The artifact's folder name: model, pruning, precision, format (``smallcnn-p30-int8-onnx``)."""
    pruned = f"-p{round(ctx.config.pruning.amount * 100)}" if ctx.config.pruning.amount > 0 else ""
    return f"{ctx.spec.name.replace(':', '.').replace('/', '.')}{pruned}-{precision.value}-{fmt.value}"


def _build_all(
    ctx: ExportContext,
    precisions: tuple[Precision, ...],
    formats: tuple[ArtifactFormat, ...],
    out_dir: Path,
    *,
    keep_going: bool,
) -> tuple[list[ArtifactRow], dict[str, str]]:
    """Each format's FP32 baseline, then its other precisions: the rows, and (keep_going) what was refused and why."""
    rows: list[ArtifactRow] = []
    refused: dict[str, str] = {}

    def build(precision: Precision, fmt: ArtifactFormat, into: Path | None) -> ArtifactRow | str:
        """The row, or (with keep_going) why it was refused."""
        try:
            return _build(ctx, precision, fmt, into)
        except ExportError as exc:  # refused by its export or its gates; a QuantizeError is the user's to fix
            if not keep_going:
                raise
            progress.status(f"[yellow]refused:[/yellow] {precision.value} {fmt.value}: {exc}")
            return str(exc)

    for fmt in formats:
        baseline = build(Precision.FP32, fmt, out_dir if Precision.FP32 in precisions else None)
        if isinstance(baseline, str):
            for precision in precisions:
                why = baseline if precision is Precision.FP32 else f"its FP32 baseline was refused: {baseline}"
                refused[artifact_name(ctx, precision, fmt)] = why
            continue
        baseline.speedup = dict.fromkeys(baseline.latency_ms, 1.0)
        rows.append(baseline)
        for precision in precisions:
            if precision is Precision.FP32:
                continue
            row = build(precision, fmt, out_dir)
            if isinstance(row, str):
                refused[artifact_name(ctx, precision, fmt)] = row
                continue
            _relate(row, baseline)
            rows.append(row)
    return rows, refused


def _build(ctx: ExportContext, precision: Precision, fmt: ArtifactFormat, out_dir: Path | None) -> ArtifactRow:
    name = artifact_name(ctx, precision, fmt)
    label = f"{precision.value} {fmt.value}"
    root = out_dir if out_dir is not None else ctx.work
    progress.status(f"exporting {label}")
    plugin = get_format(fmt)
    with staged_artifact(root, name, "model" + plugin.suffix) as staged:
        built = qat_choice.build(ctx, plugin, precision, staged.model_path)  # the format's build; PTQ vs QAT when asked
        runner, source_logits, relation, quant = built.runner, built.source_logits, built.relation, built.quantization
        n = ctx.parity_n
        target_mode = evaluation_mode(ctx.profile.name, quantized=precision is Precision.INT8, host_target=ctx.host_profile)
        mode = plugin.evaluation_mode(target_mode)  # a format without a semantics-only path runs its host kernels
        progress.status(f"validating {label} on {len(ctx.eval_split)} evaluation items ({mode})")
        batch = ctx.config.data.batch_size
        host_kernels: tuple[float | None, Parity] | None = None
        semantics = plugin.semantics_runner(staged.model_path) if mode == REFERENCE_SEMANTICS else None
        if semantics is not None:
            # Accuracy and parity as a correct device computes them; this host's kernels are shown beside them.
            logits = predict(semantics, ctx.eval_split, ctx.spec.preprocessing, batch)
            fast = predict(runner, ctx.eval_split, ctx.spec.preprocessing, batch)
            host_kernels = (_accuracy(ctx, fast), parity(logits, fast))
        else:
            # Host kernels, or TorchScript on the target's own quantized engine (its semantics; see evaluate.py).
            logits = predict(runner, ctx.eval_split, ctx.spec.preprocessing, batch)
        vs_source = parity(source_logits, logits[:n])
        check_parity(
            label, precision, relation, vs_source, source_logits, random_weights=ctx.spec.random_init,
            classifier=ctx.spec.classifier,
        )  # fmt: skip
        vs_fp32 = parity(ctx.fp32_logits[:n], logits[:n])
        device_evaluation = None
        if ctx.device_eval is not None and out_dir is not None:
            # The host's outputs (by the evaluation mode above) on the device's evaluation set.
            m = ctx.device_eval["samples"]
            reference = logits[:m].astype(np.float32)
            ref = evalset.publish(out_dir, {"reference": reference}, {"artifact": name, "evaluation_mode": mode})
            device_evaluation = {
                **ctx.device_eval,
                "reference_sha256": ref["sha256"],
                "reference_scale": float(np.abs(reference).max()),
                "host_accuracy": _accuracy(ctx, logits[:m]),
                "folder": evalset.FOLDER,
            }
        latency = {
            b: host_latency(runner, ctx.spec.preprocessing, b, ctx.config.benchmark).p50_ms
            for b in ctx.config.benchmark.batch_sizes
        }
        file = staged.file_record()
        labels = None if ctx.labels is None else ctx.labels.numpy()
        metrics = metrics_of(logits, labels, ctx.fp32_logits, classifier=ctx.spec.classifier)
        row = ArtifactRow(
            precision,
            fmt,
            file["size_bytes"],
            _accuracy(ctx, logits),
            vs_source,
            vs_fp32,
            latency,
            file["sha256"],
            None,
            quantization=quant,
            evaluation_mode=mode,
            host_kernels_accuracy=host_kernels[0] if host_kernels else None,
            host_kernels_vs_semantics=host_kernels[1] if host_kernels else None,
            device_evaluation=device_evaluation,
            metrics=metrics,
            metric=ctx.metric,
        )
        if row.accuracy is None:
            row.accuracy_delta = None
        # A format's own record (the executorch format's: delegation, planned batch, threads) joins the manifest.
        manifest = {**build_manifest(ctx, row, file, relation, quant), **getattr(runner, "manifest_extra", {})}
        if out_dir is not None:
            row.path = staged.commit(manifest)
    return row


#: Host kernels within this of the semantics (absolute logit difference) count as agreeing (float rounding).
HOST_KERNELS_TOLERANCE = 1e-4


def _evaluation_notes(ctx: ExportContext, rows: list[ArtifactRow]) -> list[str]:
    notes = []
    for row in rows:
        diff = row.host_kernels_vs_semantics
        if row.evaluation_mode != REFERENCE_SEMANTICS or diff is None:
            continue
        label = f"{row.precision.value} {row.format.value}"
        if diff.max_abs_error <= HOST_KERNELS_TOLERANCE:
            notes.append(
                f"{label}: built for {ctx.profile.name}, evaluated by the model's semantics; this host's "
                f"({ctx.host_profile}) kernels agree with them"
            )
        elif row.accuracy is None or row.host_kernels_accuracy is None:
            notes.append(
                f"{label}: built for {ctx.profile.name}, so its figures are the model's semantics (what a correct device "
                f"computes); this host's ({ctx.host_profile}) INT8 kernels give outputs up to {diff.max_abs_error:.3g} apart"
            )
        else:
            notes.append(
                f"{label}: built for {ctx.profile.name}, so its accuracy is the model's semantics "
                f"({row.accuracy * 100:.2f}%, what a correct device computes); this host's ({ctx.host_profile}) "
                f"INT8 kernels give {row.host_kernels_accuracy * 100:.2f}% (logits up to {diff.max_abs_error:.3g} apart, "
                f"top-1 agreement {diff.top1_agreement * 100:.1f}%)"
            )
    return notes


def _relate(row: ArtifactRow, baseline: ArtifactRow) -> None:
    row.size_ratio = row.size_bytes / baseline.size_bytes
    both = row.accuracy is not None and baseline.accuracy is not None
    row.accuracy_delta = row.accuracy - baseline.accuracy if both else None  # type: ignore[operator]
    row.speedup = {b: baseline.latency_ms[b] / v for b, v in row.latency_ms.items() if v > 0 and b in baseline.latency_ms}


def write_summary(out_dir: Path, data: dict[str, Any]) -> None:
    """``OUT/summary.json``: what ``edge-export --json`` prints as its ``data``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_durably(out_dir / "summary.json", (strict_json(data) + "\n").encode())
