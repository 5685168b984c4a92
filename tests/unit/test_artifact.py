from __future__ import annotations

import json
from pathlib import Path

import pytest
from edge_opt.export.artifact import MANIFEST_SCHEMA_VERSION, read_manifest, sha256_file, staged_artifact

pytestmark = pytest.mark.unit


def _manifest(staged) -> dict:
    return {"schema_version": MANIFEST_SCHEMA_VERSION, "file": staged.file_record()}


def test_commit_publishes_model_and_matching_manifest(tmp_path: Path) -> None:
    with staged_artifact(tmp_path, "m-int8-onnx", "model.onnx") as staged:
        staged.model_path.write_bytes(b"model bytes")
        final = staged.commit(_manifest(staged))
    assert final == tmp_path / "m-int8-onnx"
    manifest = read_manifest(final)
    assert manifest["file"]["sha256"] == sha256_file(final / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m-int8-onnx"]  # no staging left


def test_failure_halfway_leaves_nothing_and_keeps_old(tmp_path: Path) -> None:
    with staged_artifact(tmp_path, "m", "model.pt") as staged:
        staged.model_path.write_bytes(b"v1")
        staged.commit(_manifest(staged))
    with pytest.raises(RuntimeError), staged_artifact(tmp_path, "m", "model.pt") as staged:
        staged.model_path.write_bytes(b"v2 half written")
        raise RuntimeError("validation failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert (tmp_path / "m" / "model.pt").read_bytes() == b"v1"


def test_recommit_replaces(tmp_path: Path) -> None:
    for content in (b"v1", b"v2"):
        with staged_artifact(tmp_path, "m", "model.pt") as staged:
            staged.model_path.write_bytes(content)
            staged.commit(_manifest(staged))
    assert (tmp_path / "m" / "model.pt").read_bytes() == b"v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_read_manifest_detects_tampering(tmp_path: Path) -> None:
    with staged_artifact(tmp_path, "m", "model.onnx") as staged:
        staged.model_path.write_bytes(b"original")
        final = staged.commit(_manifest(staged))
    (final / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        read_manifest(final)


def test_read_manifest_rejects_other_schema(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "file": {"name": "x"}}))
    with pytest.raises(ValueError, match="schema"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "not an artifact manifest"),
        ('{"schema_version": 1}', "no file name and sha256"),
        ('{"schema_version": 1, "file": {"name": "../../etc/passwd", "sha256": "00"}}', "is not a name in the folder"),
        ("{not json", "not a readable manifest"),
    ],
)
def test_read_manifest_refuses_malformed_manifests_with_value_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_manifest(tmp_path)


def test_the_fleet_refuses_a_tampered_artifact_before_pushing(tmp_path: Path) -> None:
    from edge_opt.errors import ConfigError
    from edge_opt.fleet.collect import load_artifacts

    with staged_artifact(tmp_path, "m", "model.onnx") as staged:
        staged.model_path.write_bytes(b"original")
        final = staged.commit(_manifest(staged))
    assert load_artifacts([final])[0][1]["file"]["name"] == "model.onnx"
    (final / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="sha256 does not match"):
        load_artifacts([final])
