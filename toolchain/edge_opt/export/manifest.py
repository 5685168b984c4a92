"""The manifest every artifact is published with: what the model is, how it was made, for which target, the
preprocessing its input needs, the file's sha256, and what the host measured (accuracy, evaluation mode, parity,
latency). Readers check it with :func:`edge_opt.export.artifact.read_manifest`. The ``versions`` it records are the
common distributions' and each registered format's (:mod:`edge_opt.formats.registry`).
"""

from __future__ import annotations

import contextlib
import math
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from edge_agent.device.cpu import cpu_model

from edge_opt import __version__
from edge_opt.export.artifact import MANIFEST_SCHEMA_VERSION
from edge_opt.export.prepare import ExportContext
from edge_opt.formats.registry import distributions, get_format
from edge_opt.options import INPUT_NAME, OUTPUT_NAME, Precision

if TYPE_CHECKING:
    from edge_opt.export.pipeline import ArtifactRow


def build_manifest(
    ctx: ExportContext, row: ArtifactRow, file: dict[str, Any], relation: str, quant: dict[str, Any] | None
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
        "runtime": get_format(row.format).runtime,
        "target": ctx.profile.to_manifest(),
        "quantization": quant,
        "pruning": ctx.model_record.get("pruning", {"amount": 0.0}),
        "input": {"name": INPUT_NAME, "shape": ["batch", p.channels, p.height, p.width], "dtype": dtype, "layout": p.layout},
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", *ctx.spec.output_shape],
            "dtype": dtype,
            "meaning": "class scores; argmax is the class (model.class_names)" if ctx.spec.classifier else "a tensor",
        },
        "data": {"description": ctx.data.description, **ctx.data.record},
        "preprocessing": p.to_manifest(),
        "file": file,
        "versions": runtime_versions(),
        "host_metrics": {
            "host": {"machine": platform.machine(), "processor": cpu_model()},
            "accuracy": row.accuracy,
            "accuracy_samples": len(ctx.eval_split),
            "metric": row.metric,
            "metrics": {k: v for k, v in row.metrics.items() if math.isfinite(v)},
            "dataset": ctx.data.description,
            "evaluation": evaluation_record(ctx, row),
            "device_evaluation": row.device_evaluation,
            "parity_source": relation,
            "parity_vs_source": row.parity_vs_source.to_dict(),
            "parity_vs_fp32": row.parity_vs_fp32.to_dict(),
            "latency_p50_ms": {f"batch_{b}": v for b, v in row.latency_ms.items()},
            "latency_threads": ctx.config.benchmark.threads,
        },
    }


def evaluation_record(ctx: ExportContext, row: ArtifactRow) -> dict[str, Any]:
    how = get_format(row.format).evaluation_how(row.evaluation_mode, ctx.profile.torch_engine)
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


#: What shapes every artifact, whatever its format (each format adds its own: ``Format.distributions``).
COMMON_DISTRIBUTIONS = ("edge-opt", "torch", "torchvision", "numpy")


def runtime_versions() -> dict[str, str]:
    """Versions of everything that shaped an artifact (absent packages are left out)."""
    versions = {"python": platform.python_version()}
    for dist in dict.fromkeys((*COMMON_DISTRIBUTIONS, *distributions())):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist.replace("-", "_")] = version(dist)
    return versions
