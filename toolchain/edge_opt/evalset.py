"""Evaluation sets for device-side evaluation (no torch here: ``edge-fleet`` uses this module too).

An export writes, beside its artifacts::

    OUT/evalsets/<sha256>/evalset.npz + manifest.json    inputs + labels: the first test images, preprocessed
    OUT/evalsets/<sha256>/evalset.npz + manifest.json    one per artifact: "reference", the host's outputs on them

and names both in each artifact's ``host_metrics.device_evaluation``. Both are artifacts of manifest format
``evalset`` (see ``edge_agent.worker.evaluation``): pushed through the ordinary content-addressed path, so a device stores
the inputs once whatever the number of artifacts. The ``.npz`` files are written byte-for-byte reproducibly (fixed
zip timestamps, stored members), so the same images give the same sha256 in every export.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from edge_agent.contract.files import write_durably
from edge_agent.contract.manifest import write_manifest

FORMAT = "evalset"
FILE_NAME = "evalset.npz"
FOLDER = "evalsets"
#: The inputs file is kept under this many bytes (a 224×224 RGB model gets ~100 images instead of 1,000).
MAX_INPUT_BYTES = 64 << 20
#: A device's outputs are flagged when they agree with the host's top-1 on fewer items than this, or differ by
#: more than this fraction of the largest host output. A correct device reproduces the model's semantics to float
#: rounding, except for rare rounding ties where an optimised INT8 kernel lands one output quantization step away
#: (SmallCNN: 0.22 on one of 1,000 images, 0.8% of its largest logit, same top-1): the gates leave room for that.
MIN_AGREEMENT = 0.995
MAX_RELATIVE_DIFF = 0.02


def samples_for(requested: int, available: int, item_bytes: int) -> int:
    return max(0, min(requested, available, MAX_INPUT_BYTES // max(item_bytes, 1)))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A reproducible ``.npz``: members in the given order, stored, with a fixed timestamp."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def publish(out_dir: Path, arrays: dict[str, np.ndarray], description: dict[str, Any]) -> dict[str, Any]:
    """Write an evaluation set folder under ``out_dir/evalsets/<sha256>`` (idempotent); returns its file record."""
    data = npz_bytes(arrays)
    sha = hashlib.sha256(data).hexdigest()
    folder = out_dir / FOLDER / sha
    record = {"name": FILE_NAME, "sha256": sha, "size_bytes": len(data)}
    if not (folder / "manifest.json").is_file():
        manifest = {
            "schema_version": 1,
            "format": FORMAT,
            "precision": "fp32",  # the arrays' dtype; the device casts inputs to the model's own dtype
            "evalset": {**description, "members": list(arrays), "shapes": {k: list(v.shape) for k, v in arrays.items()}},
            "file": record,
        }
        folder.mkdir(parents=True, exist_ok=True)
        write_durably(folder / FILE_NAME, data)
        write_manifest(folder, manifest, durable=True)  # the manifest lands last: a folder with one is complete
    return record


def folders_of(artifact: Path) -> tuple[Path, Path | None] | None:
    """The evaluation set (inputs + labels) and reference folders an exported artifact names, if they exist."""
    try:
        manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = (manifest.get("host_metrics") or {}).get("device_evaluation") or {}
    if not record.get("eval_set_sha256"):
        return None
    root = artifact.parent / FOLDER
    inputs = root / record["eval_set_sha256"]
    reference = root / record["reference_sha256"] if record.get("reference_sha256") else None
    if not (inputs / "manifest.json").is_file():
        return None
    if reference is not None and not (reference / "manifest.json").is_file():
        reference = None
    return inputs, reference


def push_eval_sets(client: Any, artifact: Path) -> dict[str, str]:
    """Push the evaluation sets an exported artifact names (only what the device lacks); their sha256s for bench."""
    folders = folders_of(artifact)
    if folders is None:
        return {}
    inputs, reference = folders
    shas = {"eval_set_sha256": client.push(inputs).sha256}
    if reference is not None:
        shas["eval_reference_sha256"] = client.push(reference).sha256
    return shas


def flags(evaluation: dict[str, Any], reference_scale: float | None) -> list[str]:
    """Why a device's outputs disagree with the host's beyond the gates (empty: they agree)."""
    if not evaluation:
        return []
    if evaluation.get("error"):
        return [f"evaluation failed: {evaluation['error']}"]
    out = []
    agreement = evaluation.get("agreement_with_host")
    if agreement is not None and agreement < MIN_AGREEMENT:
        out.append(f"top-1 agrees with the host on {agreement * 100:.1f}% of items (< {MIN_AGREEMENT * 100:.1f}%)")
    diff = evaluation.get("max_abs_diff")
    if diff is not None and reference_scale and diff > MAX_RELATIVE_DIFF * reference_scale:
        out.append(f"outputs differ from the host's by up to {diff:.3g} (> {MAX_RELATIVE_DIFF:.0%} of {reference_scale:.3g})")
    return out
