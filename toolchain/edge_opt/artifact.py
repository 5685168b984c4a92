"""Artifacts on disk: one model file plus ``manifest.json`` in a folder of its own, published atomically.

Layout of an export folder::

    OUT/
      smallcnn-int8-onnx/          # <model>-<precision>-<format>
        model.onnx                 # or model.pt (TorchScript)
        manifest.json              # schema below; file.sha256 is the artifact's identity everywhere
      smallcnn-int8-torchscript/
        ...
      summary.json                 # the table edge-export printed, machine-readable

An artifact is built in ``OUT/.staging-*``, validated, fsynced and renamed into place in one step, so a folder
that exists always holds a validated model and a manifest whose sha256 matches it. A failure or Ctrl-C removes the
staging folder; an earlier artifact of the same name stays until the new one is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.files import fsync_dir

#: Bump on any incompatible change to the manifest; readers check it.
MANIFEST_SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


class StagedArtifact:
    """An artifact being built; :meth:`commit` publishes it."""

    def __init__(self, out_root: Path, name: str, filename: str) -> None:
        self.out_root = out_root
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=out_root))
        self.dir.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a published artifact is not
        self.model_path = self.dir / filename
        self.final_dir = out_root / name
        self.committed = False

    def file_record(self) -> dict[str, Any]:
        return {
            "name": self.model_path.name,
            "sha256": sha256_file(self.model_path),
            "size_bytes": self.model_path.stat().st_size,
        }

    def commit(self, manifest: dict[str, Any]) -> Path:
        """fsync model and manifest, then rename the folder into place. Returns the final folder."""
        with self.model_path.open("rb") as fh:
            os.fsync(fh.fileno())
        _write_json(self.dir / MANIFEST_NAME, manifest)
        fsync_dir(self.dir)
        old = None
        if self.final_dir.exists():
            old = self.out_root / f".old-{self.name}-{os.getpid()}"
            self.final_dir.replace(old)
        self.dir.replace(self.final_dir)
        fsync_dir(self.out_root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.final_dir


@contextlib.contextmanager
def staged_artifact(out_root: Path, name: str, filename: str) -> Iterator[StagedArtifact]:
    """Build an artifact in a staging folder; anything but a commit leaves no trace."""
    out_root.mkdir(parents=True, exist_ok=True)
    staged = StagedArtifact(out_root, name, filename)
    try:
        yield staged
    finally:
        if not staged.committed:
            shutil.rmtree(staged.dir, ignore_errors=True)


def runtime_versions() -> dict[str, str]:
    """Versions of everything that shaped an artifact (absent packages are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for dist in ("edge-opt", "torch", "torchvision", "onnx", "onnxruntime", "numpy", "torchao", "executorch"):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist.replace("-", "_")] = version(dist)
    return versions


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and check an artifact folder's manifest (schema version and model-file sha256).

    Raises:
        ValueError: missing manifest, unknown schema version, or a model file that does not match.
    """
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable manifest ({exc}); re-export the artifact") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not an artifact manifest (a JSON object); re-export the artifact")
    if manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: manifest schema {manifest.get('schema_version')!r} is not {MANIFEST_SCHEMA_VERSION}; "
            "re-export with this edge-opt version"
        )
    file = manifest.get("file")
    if not isinstance(file, dict) or not isinstance(file.get("name"), str) or not isinstance(file.get("sha256"), str):
        raise ValueError(f"{path}: no file name and sha256 in the manifest; re-export the artifact")
    if Path(file["name"]).name != file["name"]:
        raise ValueError(f"{path}: file name {file['name'][:80]!r} is not a name in the folder; re-export the artifact")
    model = folder / file["name"]
    if not model.is_file() or sha256_file(model) != manifest["file"]["sha256"]:
        raise ValueError(f"{model}: missing or its sha256 does not match the manifest; re-export the artifact")
    return manifest
