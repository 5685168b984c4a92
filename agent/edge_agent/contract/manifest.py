"""Artifact manifests, checked in one place for both sides of the wire (no torch, no store).

* :func:`parse_manifest` is the device's check of a pushed manifest (the store runs it on every push header):
  the fields and types the agent relies on (``format``, ``precision``, ``file``, ``input``).
* :func:`read_artifact` is the host's reader of an artifact folder (``manifest.json`` + model file), used by the
  host SDK before a push (``edge_agent.host.client``) and by the toolchain (``edge_opt.export.artifact.read_manifest``): the
  schema version, the file record, the model file's size and, when asked, its sha256 and the device's checks.
  Every problem is a :class:`ManifestError` (a ``ValueError``) whose one line names the file and what is wrong.
* :func:`write_manifest` is the one writer of ``manifest.json`` (:func:`manifest_text` its exact text): the host
  SDK's staging of a user's model file (``edge_agent.host.model_file``) and the toolchain's artifacts and
  evaluation sets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.contract.chunks import sha256_file
from edge_agent.contract.errors import ArtifactRejected
from edge_agent.contract.files import write_durably
from edge_agent.contract.formats import EVALSET_FILE, EVALSET_FORMAT, MODEL_FORMATS
from edge_agent.contract.patterns import SHA256_PATTERN

#: Bump on any incompatible change to the manifest; readers check it.
MANIFEST_SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 256 << 10
#: Deepest JSON nesting accepted in a manifest (real ones nest 4 levels).
MAX_MANIFEST_DEPTH = 32
PRECISIONS = frozenset({"fp32", "fp16", "int8"})
MODEL_FILES = {**{f.name: f.file_name for f in MODEL_FORMATS.values()}, EVALSET_FORMAT: EVALSET_FILE}


def _json_depth_ok(text: str, limit: int) -> bool:
    """True when no JSON array or object nests deeper than ``limit`` (checked before json.loads recurses)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_manifest(text: str) -> dict[str, Any]:
    """The pushed manifest's JSON, checked for the fields and types the agent relies on.

    Raises:
        ArtifactRejected: naming the field that is missing or of the wrong type.
    """
    if not _json_depth_ok(text, MAX_MANIFEST_DEPTH):
        raise ArtifactRejected(f"manifest_json nests deeper than {MAX_MANIFEST_DEPTH} levels")
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError):
        raise ArtifactRejected("manifest_json is not valid JSON; push the manifest.json edge-export wrote") from None
    if not isinstance(manifest, dict):
        raise ArtifactRejected("manifest_json must be a JSON object (an edge-opt manifest)")
    check_fields(manifest)
    return manifest


def check_fields(manifest: dict[str, Any]) -> None:
    """The device's checks of a manifest's ``file``, ``format``, ``precision``, ``input`` and ``target``.

    Raises:
        ArtifactRejected: naming the field that is missing or of the wrong type.
    """
    file, fmt, precision = manifest.get("file"), manifest.get("format"), manifest.get("precision")
    if not isinstance(file, dict):
        raise ArtifactRejected("manifest field 'file' must be an object with sha256 and size_bytes")
    if not isinstance(fmt, str) or fmt not in MODEL_FILES:
        raise ArtifactRejected(f"manifest field 'format' must be one of {sorted(MODEL_FILES)}, got {str(fmt)[:40]!r}")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ArtifactRejected(f"manifest field 'precision' must be one of {sorted(PRECISIONS)}, got {str(precision)[:40]!r}")
    for key in ("input", "target"):
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], dict):
            raise ArtifactRejected(f"manifest field {key!r} must be an object")
    _check_input(manifest.get("input") or {}, fmt)


#: The input dtypes a benchmark worker can feed.
INPUT_DTYPES = ("float32", "float16")


def _check_input(spec: dict[str, Any], fmt: str) -> None:
    """The manifest's ``input``: a shape of a batch dimension (a name or a size) and positive sizes, a known dtype.
    ONNX artifacts may leave the shape out (the model declares it); the others cannot."""
    shape, dtype = spec.get("shape"), spec.get("dtype", "float32")
    fix = "e.g. \"input\": {\"shape\": [\"batch\", 1, 28, 28], \"dtype\": \"float32\"}, as edge-export writes"
    if shape is None:
        if fmt in MODEL_FORMATS and fmt != "onnx":
            raise ArtifactRejected(f"a {fmt} manifest needs input.shape (the model does not declare it): {fix}")
    elif (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 8
        or not ((isinstance(shape[0], str) and shape[0]) or (type(shape[0]) is int and shape[0] > 0))
        or not all(type(d) is int and 0 < d <= 1 << 20 for d in shape[1:])
    ):
        raise ArtifactRejected(
            f"manifest input.shape {str(shape)[:60]} must be a batch dimension (a name or a size) and up to 7 positive "
            f"sizes: {fix}"
        )
    if dtype not in INPUT_DTYPES:
        raise ArtifactRejected(f"manifest input.dtype {str(dtype)[:40]!r} must be one of {list(INPUT_DTYPES)}: {fix}")


class ManifestError(ValueError):
    """An artifact folder whose manifest or model file is not what it should be; the message names the file."""


@dataclass(frozen=True)
class LocalArtifact:
    """An artifact folder on this machine, checked: its model file, its manifest and the manifest's exact text."""

    folder: Path
    model: Path
    manifest: dict[str, Any]
    text: str

    @property
    def sha256(self) -> str:
        return str(self.manifest["file"]["sha256"])

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["file"]["size_bytes"])


_FIX = "re-export the artifact"


def read_artifact(folder: Path, *, verify_sha256: bool = False, device_fields: bool = True) -> LocalArtifact:
    """Read and check an artifact folder: ``manifest.json`` (schema version, a file record of a plain file name, a
    sha256 and a size) and the model file it names (present, of that size; of that sha256 with ``verify_sha256``).
    ``device_fields`` also applies the device's checks (:func:`check_fields`), so that a push the device would
    refuse is refused here, naming the file.

    Raises:
        ManifestError: one line naming the file and what is wrong.
    """
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        what = "no such folder" if not folder.exists() else "not a folder"
        raise ManifestError(f"{folder}: {what}; give an artifact folder (manifest.json and its model file)")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes, not an artifact manifest; {_FIX}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestError(f"{path}: not a readable manifest ({reason}); {_FIX}") from None
    if not _json_depth_ok(text, MAX_MANIFEST_DEPTH):
        raise ManifestError(f"{path}: not a readable manifest (JSON nested deeper than {MAX_MANIFEST_DEPTH} levels); {_FIX}")
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{path}: not a readable manifest ({exc}); {_FIX}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not an artifact manifest (a JSON object); {_FIX}")
    if manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: manifest schema {repr(manifest.get('schema_version'))[:40]} is not {MANIFEST_SCHEMA_VERSION}; "
            "re-export with this edge-opt version"
        )
    model = folder / _file_name(path, manifest.get("file"))
    if device_fields:
        try:
            check_fields(manifest)
        except ArtifactRejected as exc:
            raise ManifestError(f"{path}: {exc}") from None
    try:
        size = model.stat().st_size
    except OSError as exc:
        raise ManifestError(f"{model}: the model file the manifest names cannot be read ({exc.strerror}); {_FIX}") from None
    declared = manifest["file"]["size_bytes"]
    if size != declared:
        raise ManifestError(f"{model} is {size} bytes but its manifest says {declared}; {_FIX}")
    if verify_sha256 and sha256_file(model) != manifest["file"]["sha256"]:
        raise ManifestError(f"{model}: its sha256 does not match the manifest; {_FIX}")
    return LocalArtifact(folder, model, manifest, text)


def _file_name(path: Path, file: Any) -> str:
    """The manifest's ``file`` record checked: a plain name in the folder, a sha256 and a size in bytes."""
    if not isinstance(file, dict) or not isinstance(file.get("name"), str) or not isinstance(file.get("sha256"), str):
        raise ManifestError(f"{path}: no file name and sha256 in the manifest; {_FIX}")
    name = file["name"]
    if not name or Path(name).name != name or name in (".", "..") or "\x00" in name:
        raise ManifestError(f"{path}: file name {name[:80]!r} is not a name in the folder; {_FIX}")
    if not SHA256_PATTERN.fullmatch(file["sha256"]):
        raise ManifestError(f"{path}: file.sha256 {file['sha256'][:80]!r} is not 64 lowercase hex characters; {_FIX}")
    size = file.get("size_bytes")
    if type(size) is not int or size < 0:
        raise ManifestError(f"{path}: file.size_bytes must be the model file's size in bytes, got {str(size)[:40]!r}; {_FIX}")
    return name



def manifest_text(manifest: dict[str, Any]) -> str:
    """A manifest as ``manifest.json`` holds it: JSON indented by 2, keys in the caller's order, a final newline."""
    return json.dumps(manifest, indent=2) + "\n"


def write_manifest(folder: Path, manifest: dict[str, Any], *, durable: bool = False) -> Path:
    """Write ``folder/manifest.json``; ``durable``: atomically and fsynced (:func:`edge_agent.contract.files.write_durably`),
    for an artifact that is published. Returns the file's path."""
    path = folder / MANIFEST_NAME
    text = manifest_text(manifest)
    if durable:
        write_durably(path, text.encode("utf-8"))
    else:
        path.write_text(text, encoding="utf-8")
    return path
