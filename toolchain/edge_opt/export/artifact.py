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

The manifest's schema version, its reader and the file hash are ``edge_agent.contract.manifest``'s: one definition for the
toolchain and the host SDK.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.contract.files import fsync_dir
from edge_agent.contract.manifest import (  # noqa: F401 - MANIFEST_NAME, MANIFEST_SCHEMA_VERSION re-exported
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    read_artifact,
    sha256_file,
    write_manifest,
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        write_manifest(self.dir, manifest, durable=True)  # the contract's one writer; fsyncs the folder too
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


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and check an artifact folder's manifest (schema version, file record and the model file's sha256),
    through the reader the host SDK uses too (:func:`edge_agent.contract.manifest.read_artifact`).

    Raises:
        ValueError: missing manifest, unknown schema version, or a model file that does not match; the message
            names the file.
    """
    return read_artifact(folder, verify_sha256=True, device_fields=False).manifest
