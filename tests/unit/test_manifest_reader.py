"""One checked reader of artifact folders for the host SDK and the toolchain (edge_agent.contract.manifest): a malformed
manifest is one line naming the file and what is wrong, before anything is sent to a device."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from agent_helpers import tiny_onnx_bytes, write_artifact
from edge_agent.contract import manifest as shared
from edge_agent.contract.manifest import ManifestError, read_artifact
from edge_agent.host.client import AgentClient
from edge_agent.store import catalogue as store

pytestmark = pytest.mark.unit


def _edit(folder: Path, change) -> Path:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m["file"].pop("size_bytes"), "file.size_bytes"),
        (lambda m: m["file"].update(size_bytes="12"), "file.size_bytes"),
        (lambda m: m.update(schema_version=2), "manifest schema 2 is not 1"),
        (lambda m: m.pop("schema_version"), "manifest schema None is not 1"),
        (lambda m: m.update(file="model.onnx"), "no file name and sha256"),
        (lambda m: m["file"].update(sha256="ABC"), "file.sha256"),
        (lambda m: m["file"].update(name="../model.onnx"), "is not a name in the folder"),
        (lambda m: m["file"].update(name="model\x00.onnx"), "is not a name in the folder"),
        (lambda m: m.update(format="tflite"), "manifest field 'format'"),
        (lambda m: m.update(precision="int4"), "manifest field 'precision'"),
        (lambda m: m["input"].update(shape=["batch", 0, 28]), "manifest input.shape"),
    ],
)
def test_a_malformed_manifest_is_refused_by_the_host_naming_the_file(tmp_path: Path, change, named: str) -> None:
    # setup: an artifact folder as edge-export writes it, then one thing wrong in its manifest
    folder = write_artifact(tmp_path / "art", tiny_onnx_bytes())
    path = _edit(folder, change)
    # execute: the push is refused on the host (port 1 answers nothing: no call is made)
    with AgentClient("127.0.0.1:1", timeout=2) as client, pytest.raises(ValueError) as err:
        client.push(folder)
    # assert: a ValueError (the CLI's exit 1), one line, naming the manifest and what is wrong
    message = str(err.value)
    assert isinstance(err.value, ManifestError)
    assert "\n" not in message and message.startswith(str(path)) and named in message, message


def test_a_model_file_that_does_not_match_its_manifest_is_named(tmp_path: Path) -> None:
    folder = write_artifact(tmp_path / "art", tiny_onnx_bytes())
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(ManifestError, match=r"model\.onnx is \d+ bytes but its manifest says \d+"):
        read_artifact(folder)
    model.unlink()
    with pytest.raises(ManifestError, match="model file the manifest names cannot be read"):
        read_artifact(folder)
    with pytest.raises(ManifestError, match="no such folder"):
        read_artifact(tmp_path / "nope")


def test_the_sha256_is_checked_when_asked_and_the_toolchain_reads_through_the_same_reader(tmp_path: Path) -> None:
    from edge_opt.export.artifact import read_manifest

    folder = write_artifact(tmp_path / "art", tiny_onnx_bytes())
    assert read_artifact(folder, verify_sha256=True).sha256 == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "model.onnx").write_bytes(bytes(data))
    assert read_artifact(folder).size_bytes == len(data)  # the host SDK leaves the hash to the device
    for read in (lambda f: read_artifact(f, verify_sha256=True), read_manifest):
        with pytest.raises(ValueError, match="sha256 does not match"):
            read(folder)


def test_the_store_checks_pushed_manifests_with_the_shared_code() -> None:
    assert store.parse_manifest is shared.parse_manifest and store.MODEL_FILES is shared.MODEL_FILES
    with pytest.raises(store.ArtifactRejected, match="manifest field 'file'"):
        store.parse_manifest(json.dumps({"format": "onnx", "precision": "fp32"}))
    # what the store accepts is unchanged: no schema version needed on the wire
    assert store.parse_manifest(json.dumps({"format": "onnx", "precision": "fp32", "file": {}}))["format"] == "onnx"
