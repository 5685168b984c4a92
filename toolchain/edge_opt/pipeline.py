"""The export job behind ``edge-export``: model → FP16 / INT8 → TorchScript + ONNX → validated artifacts.

For every (precision, format) the artifact is exported into a staging folder, loaded back with its own runtime,
compared with the model it came from on real test images (the parity gate below), evaluated on the test split,
timed on this host, and only then published with its manifest. FP32 artifacts of the same formats are always
built as the baseline of the size, accuracy and latency ratios, and written only when FP32 is asked for.

Parity gates are in :mod:`edge_opt.validation`.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_agent.device import cpu_model

from edge_opt import __version__, evalset, progress
from edge_opt.artifact import MANIFEST_SCHEMA_VERSION, runtime_versions, staged_artifact
from edge_opt.config import ArtifactFormat, Config, Precision, cache_dir, resolve_data_root
from edge_opt.data import CLASS_NAMES, FashionMNIST, Split, load_fashion_mnist
from edge_opt.evaluate import (
    REFERENCE_SEMANTICS,
    OrtRunner,
    Parity,
    Runner,
    TorchRunner,
    accuracy_of,
    evaluation_mode,
    host_latency,
    parity,
    predict,
)
from edge_opt.export import INPUT_NAME, OUTPUT_NAME, export_onnx, export_torchscript, load_torchscript, quantize_onnx
from edge_opt.models import ModelSpec, build_model, parameter_bytes, recalibrate_batchnorm
from edge_opt.quantization import check_backend, check_keep_float, to_fp16, to_int8
from edge_opt.quiet import known_warnings_silenced
from edge_opt.sensitivity import onnx_nodes_for_modules
from edge_opt.targets import TargetProfile, resolve_target
from edge_opt.train import trained_checkpoint
from edge_opt.validation import check_parity

#: An INT8 accuracy drop (fraction) beyond which the summary points at the sensitivity report.
INT8_DROP_NOTE = 0.01
#: Training batches used to re-estimate BatchNorm statistics of random-init models.
BATCHNORM_BATCHES = 8
#: Models whose built-in weights are trained on Fashion-MNIST when no checkpoint is given.
TRAINABLE_BY_DEFAULT = ("smallcnn",)
_SUFFIX = {ArtifactFormat.TORCHSCRIPT: ".pt", ArtifactFormat.ONNX: ".onnx", ArtifactFormat.EXECUTORCH: ".pte"}
_RUNTIME = {
    ArtifactFormat.TORCHSCRIPT: "torchscript",
    ArtifactFormat.ONNX: "onnxruntime",
    ArtifactFormat.EXECUTORCH: "executorch",
}


@dataclass
class ArtifactRow:
    """One line of the summary table."""

    precision: Precision
    format: ArtifactFormat
    size_bytes: int
    accuracy: float
    parity_vs_source: Parity
    parity_vs_fp32: Parity
    latency_ms: dict[int, float]
    sha256: str
    path: Path | None  # None: a baseline that was measured but not written
    size_ratio: float = 1.0
    accuracy_delta: float = 0.0
    speedup: dict[int, float] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    #: How accuracy and parity were computed: edge_opt.evaluate.HOST_KERNELS or REFERENCE_SEMANTICS.
    evaluation_mode: str = "host-kernels"
    #: In reference-semantics mode (ONNX): what this host's optimised kernels give, and how far they are from it.
    host_kernels_accuracy: float | None = None
    host_kernels_vs_semantics: Parity | None = None
    #: The evaluation sets a device checks this artifact with (edge_opt.evalset), when they were written.
    device_evaluation: dict[str, Any] | None = None

    @property
    def written(self) -> bool:
        return self.path is not None

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
            "accuracy": round(self.accuracy, 5),
            "accuracy_delta_to_fp32": round(self.accuracy_delta, 5),
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


@dataclass
class ExportReport:
    model: str
    target: TargetProfile
    out_dir: Path
    eval_samples: int
    reference_accuracy: float
    rows: list[ArtifactRow]
    notes: list[str]
    latency_threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target.name,
            "out_dir": str(self.out_dir),
            "eval_samples": self.eval_samples,
            "latency_threads": self.latency_threads,
            "fp32_eager_accuracy": round(self.reference_accuracy, 5),
            "artifacts": [r.to_dict() for r in self.rows],
            "notes": self.notes,
        }


@dataclass
class _Context:
    config: Config
    profile: TargetProfile
    host_profile: str  # resolve_target("host").name: the evaluation mode depends on it
    spec: ModelSpec
    data: FashionMNIST
    eval_split: Split
    calibration: list[torch.Tensor]
    fp32_logits: np.ndarray  # eager FP32 on eval_split
    parity_n: int
    model_record: dict[str, Any]
    work: Path  # scratch space for baselines and intermediate files
    int8_model: torch.nn.Module | None = None  # FX INT8, built once and shared by the formats
    int8_seconds: float = 0.0  # prepare + calibrate + convert
    device_eval: dict[str, Any] | None = None  # the inputs + labels evaluation set written for this export
    pt2e_model: torch.nn.Module | None = None  # PT2E INT8 (the executorch format's), built once
    pt2e_seconds: float = 0.0


def run_export(
    config: Config,
    out_dir: Path,
    *,
    precisions: tuple[Precision, ...] | None = None,
    formats: tuple[ArtifactFormat, ...] | None = None,
) -> ExportReport:
    """Export every requested (precision, format) of the configured model into ``out_dir``.

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
        _evaluation_sets_kept_only_with_artifacts(out_dir),
    ):
        ctx = _prepare(config, profile, Path(work))
        ctx.device_eval = _write_device_eval_set(ctx, out_dir)
        notes: list[str] = []
        if ctx.spec.random_init:
            notes.append(
                f"{ctx.spec.name} has random weights (no --checkpoint): accuracy figures are meaningless; FP16 / INT8 "
                "artifacts are not held to top-1 agreement, and ONNX INT8 only to finite outputs"
            )
        rows: list[ArtifactRow] = []
        for fmt in formats:
            baseline = _build(ctx, Precision.FP32, fmt, out_dir if Precision.FP32 in precisions else None)
            baseline.speedup = dict.fromkeys(baseline.latency_ms, 1.0)
            rows.append(baseline)
            for precision in precisions:
                if precision is not Precision.FP32:
                    row = _build(ctx, precision, fmt, out_dir)
                    _relate(row, baseline)
                    rows.append(row)
        if Precision.FP16 in precisions:
            notes.append("FP16 halves the size; CPUs without FP16 kernels run it no faster (often slower) than FP32")
        notes += _evaluation_notes(ctx, rows)
        for row in rows:
            if row.precision is Precision.INT8 and row.accuracy_delta < -INT8_DROP_NOTE and not ctx.spec.random_init:
                notes.append(
                    f"INT8 {row.format.value} lost {-row.accuracy_delta * 100:.2f} points: `edge-sweep --sensitivity` "
                    "(same flags) lists the layers INT8 hurts most and what keeping them in float buys back; "
                    "or raise --calibration-batches"
                )
    rows.sort(key=lambda r: (list(Precision).index(r.precision), r.format.value))
    report = ExportReport(
        ctx.spec.name,
        profile,
        out_dir,
        len(ctx.eval_split),
        accuracy_of(ctx.fp32_logits, ctx.eval_split.labels),
        rows,
        notes,
        config.benchmark.threads,
    )
    _write_summary(report)
    return report


def prepare_model(config: Config, profile: TargetProfile, work: Path) -> _Context:
    """Data, model (trained / loaded / pruned), calibration batches and FP32 reference logits, as an export sees them."""
    with known_warnings_silenced():
        return _prepare(config, profile, work)


def _prepare(config: Config, profile: TargetProfile, work: Path) -> _Context:
    data = load_fashion_mnist(resolve_data_root(config), download=config.data.download)
    m = config.model
    torch.manual_seed(config.train.seed)  # random-init weights, and so every export, are reproducible
    spec = build_model(m.name, num_classes=m.num_classes, input_size=m.input_size, checkpoint=m.checkpoint)
    record: dict[str, Any] = {"name": spec.name, "num_classes": m.num_classes, "class_names": list(CLASS_NAMES)}
    if m.checkpoint is not None:
        record["weights"] = "checkpoint"
        record["checkpoint"] = str(m.checkpoint)
    elif spec.name in TRAINABLE_BY_DEFAULT:
        progress.status(f"training {spec.name} on Fashion-MNIST (once; cached)")
        path, cached = trained_checkpoint(spec.module, spec.name, data.train, spec.preprocessing, config.train, cache_dir())
        progress.status(f"{'using cached' if cached else 'cached'} weights {path}")
        spec.random_init = False
        record["weights"] = "trained"
        record["training"] = config.train.model_dump(mode="json")
    else:
        record["weights"] = "random-init"
        if _recalibrate_batchnorm(config, spec, data):
            record["batchnorm_recalibrated_batches"] = BATCHNORM_BATCHES
    if config.pruning.amount > 0:
        record["pruning"] = _prune(config, spec, data)
    record["parameters"] = sum(p.numel() for p in spec.module.parameters())
    record["fp32_parameter_bytes"] = parameter_bytes(spec.module)

    eval_split = data.test if config.data.eval_samples is None else data.test.head(config.data.eval_samples)
    calibration = [
        x
        for x, _ in data.train.batches(
            spec.preprocessing,
            config.data.batch_size,
            shuffle=True,
            seed=config.train.seed + 1000,
            limit=config.calibration_batches,
        )
    ]
    progress.status(f"evaluating FP32 {spec.name} on {len(eval_split)} test images")
    fp32_logits = predict(TorchRunner(spec.module), eval_split, spec.preprocessing, config.data.batch_size)
    parity_n = min(config.export.parity_samples, len(eval_split))
    host = resolve_target("host").name
    return _Context(config, profile, host, spec, data, eval_split, calibration, fp32_logits, parity_n, record, work)


@contextlib.contextmanager
def _evaluation_sets_kept_only_with_artifacts(out_dir: Path) -> Iterator[None]:
    """An export that fails leaves nothing behind: evaluation sets it wrote are removed again."""
    folder = out_dir / evalset.FOLDER
    before = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    try:
        yield
    except BaseException:
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name not in before:
                    shutil.rmtree(entry, ignore_errors=True)
            if not before and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _write_device_eval_set(ctx: _Context, out_dir: Path) -> dict[str, Any] | None:
    """The first test images, preprocessed, with their labels: what a device evaluates each artifact on."""
    p = ctx.spec.preprocessing
    n = evalset.samples_for(ctx.config.export.device_eval_samples, len(ctx.eval_split), 4 * p.channels * p.height * p.width)
    if n == 0:
        return None
    head = ctx.eval_split.head(n)
    inputs = np.concatenate([x.numpy() for x, _ in head.batches(p, ctx.config.data.batch_size)]).astype(np.float32)
    labels = head.labels.numpy().astype(np.int64)
    description = {"dataset": "Fashion-MNIST test split", "first": n, "preprocessing": p.to_manifest()}
    record = evalset.publish(out_dir, {"inputs": inputs, "labels": labels}, description)
    return {"eval_set_sha256": record["sha256"], "samples": n}


def _recalibrate_batchnorm(config: Config, spec: ModelSpec, data: FashionMNIST) -> bool:
    """Random weights: re-estimate BatchNorm statistics on training batches, so outputs are not degenerate."""
    warm = data.train.batches(spec.preprocessing, config.data.batch_size, shuffle=True, limit=BATCHNORM_BATCHES)
    return recalibrate_batchnorm(spec.module, [x for x, _ in warm])


def _prune(config: Config, spec: ModelSpec, data: FashionMNIST) -> dict[str, Any]:
    """Prune the model in place, then fine-tune it (trained weights) or re-estimate BatchNorm (random weights)."""
    from edge_opt.config import TrainSection
    from edge_opt.pruning import prune, sparsity
    from edge_opt.train import train_classifier

    p = config.pruning
    before = sum(x.numel() for x in spec.module.parameters())
    example = next(data.train.batches(spec.preprocessing, 2))[0]
    progress.status(f"pruning {p.amount:.0%} ({p.method.value})")
    prune(spec.module, example, p.amount, p.method)
    tuned = 0
    if spec.random_init:
        _recalibrate_batchnorm(config, spec, data)
    elif p.fine_tune_epochs:
        progress.status(f"fine-tuning the pruned model for {p.fine_tune_epochs} epoch(s)")
        settings = TrainSection(
            epochs=p.fine_tune_epochs,
            learning_rate=p.fine_tune_learning_rate,
            batch_size=config.train.batch_size,
            seed=config.train.seed,
        )
        train_classifier(spec.module, data.train, spec.preprocessing, settings)
        tuned = p.fine_tune_epochs
    spec.module.eval()
    return {
        "amount": p.amount,
        "method": p.method.value,
        "fine_tune_epochs": tuned,
        "parameters_before": before,
        "parameters_after": sum(x.numel() for x in spec.module.parameters()),
        "weight_sparsity": round(sparsity(spec.module), 4),
    }


def _source_model(ctx: _Context, precision: Precision) -> torch.nn.Module:
    if precision is Precision.FP16:
        return to_fp16(ctx.spec.module)
    if precision is Precision.INT8:
        if ctx.int8_model is None:
            progress.status(f"FX INT8 quantization ({ctx.profile.torch_engine}, {len(ctx.calibration)} calibration batches)")
            started = time.perf_counter()
            ctx.int8_model = to_int8(
                ctx.spec.module,
                ctx.calibration,
                calibration_batches=len(ctx.calibration),
                backend=ctx.profile.torch_engine,
                observer=ctx.config.quantization.fx_observer,
                keep_float=ctx.config.quantization.keep_float,
            )
            ctx.int8_seconds = time.perf_counter() - started
        return ctx.int8_model
    return ctx.spec.module


def _fp32_onnx(ctx: _Context) -> Path:
    path = ctx.work / "fp32.onnx"
    if not path.exists():
        export_onnx(ctx.spec.module, ctx.calibration[0][:1], path, opset=ctx.config.export.opset)
    return path


def _write_model(
    ctx: _Context, precision: Precision, fmt: ArtifactFormat, path: Path
) -> tuple[Runner, np.ndarray, str, dict[str, Any] | None]:
    """Export one model file; returns its runner, the source's parity logits, the relation and quant details."""
    n = ctx.parity_n
    example = ctx.calibration[0][:1]
    engine = ctx.profile.torch_engine if precision is Precision.INT8 else None
    quant: dict[str, Any] | None = None
    if fmt is ArtifactFormat.EXECUTORCH:
        from edge_opt.executorch_export import write_executorch

        return write_executorch(ctx, precision, path)
    if fmt is ArtifactFormat.TORCHSCRIPT or precision is not Precision.INT8:
        source = _source_model(ctx, precision)
        dtype = torch.float16 if precision is Precision.FP16 else torch.float32
        source_logits = (
            ctx.fp32_logits[:n]
            if precision is Precision.FP32
            else predict(
                TorchRunner(source, dtype=dtype, engine=engine),
                ctx.eval_split.head(n),
                ctx.spec.preprocessing,
                ctx.config.data.batch_size,
            )
        )
        if precision is Precision.INT8:
            quant = {
                "engine": "torch.ao.quantization FX (prepare_fx / convert_fx)",
                "backend": ctx.profile.torch_engine,
                "observer": ctx.config.quantization.fx_observer.value,
                "per_channel": ctx.profile.torch_engine in ("x86", "fbgemm"),
                "calibration_batches": len(ctx.calibration),
                "calibration_batch_size": ctx.config.data.batch_size,
                "modules_kept_float": list(ctx.config.quantization.keep_float),
                "calibration_seconds": round(ctx.int8_seconds, 3),
            }
        if fmt is ArtifactFormat.TORCHSCRIPT:
            export_torchscript(source, example.to(dtype), path, engine=engine)
            return TorchRunner(load_torchscript(path), dtype=dtype, engine=engine), source_logits, "same", quant
        if precision is Precision.FP32:
            shutil.copyfile(_fp32_onnx(ctx), path)  # the same graph INT8 ONNX quantizes: export it once
        else:
            export_onnx(source, example.to(dtype), path, opset=ctx.config.export.opset)
        return OrtRunner(path), source_logits, "same", quant
    # INT8 ONNX: ONNX Runtime quantizes the FP32 graph with the same calibration batches.
    q = ctx.config.quantization
    check_keep_float(ctx.spec.module, q.keep_float)
    fp32_onnx = _fp32_onnx(ctx)
    excluded = list(dict.fromkeys([*onnx_nodes_for_modules(fp32_onnx, q.keep_float), *q.keep_float_nodes]))
    started = time.perf_counter()
    quant = quantize_onnx(
        fp32_onnx, path, [x.numpy() for x in ctx.calibration], ctx.profile, method=q.ort_calibration, keep_float=excluded
    )
    quant["calibration_seconds"] = round(time.perf_counter() - started, 3)
    quant["calibration_batch_size"] = ctx.config.data.batch_size
    return OrtRunner(path), ctx.fp32_logits[:n], "quantized", quant


def _build(ctx: _Context, precision: Precision, fmt: ArtifactFormat, out_dir: Path | None) -> ArtifactRow:
    pruned = f"-p{round(ctx.config.pruning.amount * 100)}" if ctx.config.pruning.amount > 0 else ""
    name = f"{ctx.spec.name.replace(':', '.').replace('/', '.')}{pruned}-{precision.value}-{fmt.value}"
    label = f"{precision.value} {fmt.value}"
    root = out_dir if out_dir is not None else ctx.work
    progress.status(f"exporting {label}")
    with staged_artifact(root, name, "model" + _SUFFIX[fmt]) as staged:
        runner, source_logits, relation, quant = _write_model(ctx, precision, fmt, staged.model_path)
        n = ctx.parity_n
        mode = evaluation_mode(ctx.profile.name, quantized=precision is Precision.INT8, host_target=ctx.host_profile)
        progress.status(f"validating {label} on {len(ctx.eval_split)} test images ({mode})")
        batch = ctx.config.data.batch_size
        host_kernels: tuple[float, Parity] | None = None
        if mode == REFERENCE_SEMANTICS and fmt is ArtifactFormat.ONNX:
            # Accuracy and parity as a correct device computes them; this host's kernels are shown beside them.
            logits = predict(OrtRunner(staged.model_path, semantics=True), ctx.eval_split, ctx.spec.preprocessing, batch)
            fast = predict(runner, ctx.eval_split, ctx.spec.preprocessing, batch)
            host_kernels = (accuracy_of(fast, ctx.eval_split.labels), parity(logits, fast))
        else:
            # Host kernels, or TorchScript on the target's own quantized engine (its semantics; see evaluate.py).
            logits = predict(runner, ctx.eval_split, ctx.spec.preprocessing, batch)
        vs_source = parity(source_logits, logits[:n])
        check_parity(label, precision, relation, vs_source, source_logits, random_weights=ctx.spec.random_init)
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
                "host_accuracy": accuracy_of(logits[:m], ctx.eval_split.labels[:m]),
                "folder": evalset.FOLDER,
            }
        latency = {
            b: host_latency(runner, ctx.spec.preprocessing, b, ctx.config.benchmark).p50_ms
            for b in ctx.config.benchmark.batch_sizes
        }
        file = staged.file_record()
        row = ArtifactRow(
            precision,
            fmt,
            file["size_bytes"],
            accuracy_of(logits, ctx.eval_split.labels),
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
        )
        manifest = {**_manifest(ctx, row, file, relation, quant), **getattr(runner, "manifest_extra", {})}
        if out_dir is not None:
            row.path = staged.commit(manifest)
    return row


def _evaluation_record(ctx: _Context, row: ArtifactRow) -> dict[str, Any]:
    if row.evaluation_mode != REFERENCE_SEMANTICS:
        how = "this host's kernels (it is the artifact's target, or the artifact is not quantized)"
    elif row.format is ArtifactFormat.ONNX:
        how = "onnxruntime with graph optimisations disabled: QuantizeLinear / DequantizeLinear executed as written"
    else:
        how = f"torch quantized engine {ctx.profile.torch_engine!r} (the target's), integer kernels"
    record: dict[str, Any] = {
        "mode": row.evaluation_mode,
        "host_target": ctx.host_profile,
        "artifact_target": ctx.profile.name,
        "how": how,
    }
    if row.host_kernels_vs_semantics is not None and row.host_kernels_accuracy is not None:
        record["host_kernels"] = {
            "accuracy": row.host_kernels_accuracy,
            "vs_semantics": row.host_kernels_vs_semantics.to_dict(),
        }
    return record


#: Host kernels within this of the semantics (absolute logit difference) count as agreeing (float rounding).
HOST_KERNELS_TOLERANCE = 1e-4


def _evaluation_notes(ctx: _Context, rows: list[ArtifactRow]) -> list[str]:
    notes = []
    for row in rows:
        diff = row.host_kernels_vs_semantics
        if row.evaluation_mode != REFERENCE_SEMANTICS or diff is None or row.host_kernels_accuracy is None:
            continue
        label = f"{row.precision.value} {row.format.value}"
        if diff.max_abs_error <= HOST_KERNELS_TOLERANCE:
            notes.append(
                f"{label}: built for {ctx.profile.name}, evaluated by the model's semantics; this host's "
                f"({ctx.host_profile}) kernels agree with them"
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
    row.accuracy_delta = row.accuracy - baseline.accuracy
    row.speedup = {b: baseline.latency_ms[b] / v for b, v in row.latency_ms.items() if v > 0 and b in baseline.latency_ms}


def _manifest(
    ctx: _Context, row: ArtifactRow, file: dict[str, Any], relation: str, quant: dict[str, Any] | None
) -> dict[str, Any]:
    p = ctx.spec.preprocessing
    dtype = "float16" if row.precision is Precision.FP16 else "float32"
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "producer": f"edge-opt {__version__}",
        "model": {**ctx.model_record, "variant": f"{row.precision.value}-{row.format.value}"},
        "precision": row.precision.value,
        "format": row.format.value,
        "runtime": _RUNTIME[row.format],
        "target": ctx.profile.to_manifest(),
        "quantization": quant,
        "pruning": ctx.model_record.get("pruning", {"amount": 0.0}),
        "input": {"name": INPUT_NAME, "shape": ["batch", p.channels, p.height, p.width], "dtype": dtype, "layout": p.layout},
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", ctx.config.model.num_classes],
            "dtype": dtype,
            "meaning": "logits; argmax is the class",
        },
        "preprocessing": p.to_manifest(),
        "file": file,
        "versions": runtime_versions(),
        "host_metrics": {
            "host": {"machine": platform.machine(), "processor": cpu_model()},
            "accuracy": row.accuracy,
            "accuracy_samples": len(ctx.eval_split),
            "dataset": "Fashion-MNIST test split",
            "evaluation": _evaluation_record(ctx, row),
            "device_evaluation": row.device_evaluation,
            "parity_source": relation,
            "parity_vs_source": row.parity_vs_source.to_dict(),
            "parity_vs_fp32": row.parity_vs_fp32.to_dict(),
            "latency_p50_ms": {f"batch_{b}": v for b, v in row.latency_ms.items()},
            "latency_threads": ctx.config.benchmark.threads,
        },
    }


def _write_summary(report: ExportReport) -> None:
    import json

    report.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = report.out_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(report.out_dir / "summary.json")
