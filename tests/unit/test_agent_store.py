from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from agent_helpers import tiny_onnx_bytes
from edge_agent.contract.errors import ArtifactRejected, IntegrityError, OffsetMismatch, QuotaExceeded
from edge_agent.store.catalogue import ArtifactStore
from edge_agent.store.records import PushHeader, StoreLimits

pytestmark = pytest.mark.unit


def _header(data: bytes, *, name: str = "m", offset: int = 0, fmt: str = "onnx", sha: str | None = None) -> PushHeader:
    sha = hashlib.sha256(data).hexdigest() if sha is None else sha
    manifest = {"format": fmt, "precision": "fp32", "file": {"sha256": sha, "size_bytes": len(data)}}
    manifest["input"] = {"shape": ["batch", 1, 28, 28], "dtype": "float32"}
    return PushHeader(sha, len(data), name, json.dumps(manifest), offset)


def _push(store: ArtifactStore, data: bytes, chunk: int = 1000, **kw):
    with store.begin_push(_header(data, **kw)) as upload:
        for i in range(0, len(data), chunk):
            upload.write(i, data[i : i + chunk])
        return upload.finish()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_push_commits_content_addressed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()
    meta = _push(store, data)
    assert store.get(meta.sha256) == meta
    assert store.model_path(meta.sha256).read_bytes() == data
    assert store.model_path(meta.sha256).parent.name == meta.sha256  # the path comes from the hash only
    assert list(store.staging_dir.iterdir()) == []


def test_corrupted_bytes_are_data_loss_and_nothing_is_kept(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0x01
    with pytest.raises(IntegrityError), store.begin_push(_header(data)) as upload:
        upload.write(0, bytes(corrupted))
        upload.finish()
    assert store.list() == [] and list(store.staging_dir.iterdir()) == []
    assert _push(store, data).sha256 == hashlib.sha256(data).hexdigest()  # a clean re-push succeeds


def test_interrupted_push_resumes_from_staged_bytes(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with store.begin_push(_header(data)) as upload:
        upload.write(0, data[:5000])  # the client vanishes here
    assert store.staged_bytes(sha) == 5000 and store.get(sha) is None
    with pytest.raises(OffsetMismatch, match="resume from 5000"):
        store.begin_push(_header(data, offset=0))
    with store.begin_push(_header(data, offset=5000)) as upload:
        upload.write(5000, data[5000:])
        meta = upload.finish()
    assert store.model_path(meta.sha256).read_bytes() == data
    # a restarted agent (new instance) sees the same staged state
    with store.begin_push(_header(tiny_onnx_bytes(8))) as upload:
        upload.write(0, tiny_onnx_bytes(8)[:100])
    assert ArtifactStore(tmp_path).staged_bytes(hashlib.sha256(tiny_onnx_bytes(8)).hexdigest()) == 100


def test_chunks_must_be_contiguous_and_within_size(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()
    with store.begin_push(_header(data)) as upload:
        with pytest.raises(ArtifactRejected, match="not the next byte"):
            upload.write(10, data[10:20])
        upload.write(0, data)
        with pytest.raises(ArtifactRejected, match="past the declared size"):
            upload.write(len(data), b"x")


def test_limits_checked_before_any_byte_is_written(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, StoreLimits(max_artifact_bytes=1000, quota_bytes=10_000))
    big = b"x" * 2000
    with pytest.raises(QuotaExceeded, match="maximum"):
        store.begin_push(_header(big))
    store = ArtifactStore(tmp_path, StoreLimits(max_artifact_bytes=1 << 20, quota_bytes=1000))
    with pytest.raises(QuotaExceeded, match="quota"):
        store.begin_push(_header(big))
    store = ArtifactStore(tmp_path, StoreLimits(reserve_bytes=1 << 62))
    with pytest.raises(QuotaExceeded, match="disk"):
        store.begin_push(_header(big))
    assert _files(tmp_path) == []


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "..\\x", "a\x00b", "n" * 4096, "ｅｖｉｌ", "a/b", ""])
def test_names_are_metadata_never_paths(tmp_path: Path, name: str) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactRejected, match="name"):
        store.begin_push(_header(b"data", name=name))
    assert _files(tmp_path) == []


@pytest.mark.parametrize("sha", ["", "abc", "G" * 64, "A" * 64, "../" + "a" * 61])
def test_malformed_sha256(tmp_path: Path, sha: str) -> None:
    with pytest.raises(ArtifactRejected, match="sha256"):
        ArtifactStore(tmp_path).begin_push(_header(b"data", sha=sha))


def test_header_must_match_manifest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()
    header = _header(data)
    bad = PushHeader(header.sha256, header.size_bytes + 1, "m", header.manifest_json)
    with pytest.raises(ArtifactRejected, match="do not match"):
        store.begin_push(bad)
    with pytest.raises(ArtifactRejected, match="format"):
        store.begin_push(_header(data, fmt="tflite"))
    with pytest.raises(ArtifactRejected, match="manifest_json"):
        store.begin_push(PushHeader(header.sha256, header.size_bytes, "m", "not json"))


def test_a_present_artifact_is_found_only_through_the_same_manifest_checks(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()
    header = _header(data)
    assert store.already_present(header) is None  # not here yet: a new push
    meta = _push(store, data)
    assert store.already_present(header) == meta
    manifest = json.loads(header.manifest_json)
    for bad, match in (
        ({**manifest, "notes": "x" * (300 << 10)}, "larger than"),
        ({**manifest, "file": {**manifest["file"], "size_bytes": len(data) + 1}}, "do not match"),
        ({**manifest, "format": "torchscript"}, "already on this device as a fp32 onnx"),
    ):
        with pytest.raises(ArtifactRejected, match=match):
            store.already_present(PushHeader(header.sha256, header.size_bytes, "m", json.dumps(bad)))
    with pytest.raises(ArtifactRejected, match="nests deeper"):
        store.already_present(PushHeader(header.sha256, header.size_bytes, "m", "[" * 1000 + "]" * 1000))


def test_symlink_planted_in_staging_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    store = ArtifactStore(tmp_path / "store")
    data = tiny_onnx_bytes()
    sha = hashlib.sha256(data).hexdigest()
    planted = store.staging_dir / f"{sha}.part"
    planted.symlink_to(outside)
    assert store.staged_bytes(sha) == 0  # a symlink is not staged bytes
    meta = _push(store, data)  # the planted link is removed, never written through
    assert meta.sha256 == sha and outside.read_text() == "precious" and not planted.exists()


def test_content_must_match_format(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactRejected, match="TorchScript zip"):
        _push(store, tiny_onnx_bytes(), fmt="torchscript")
    assert store.list() == [] and list(store.staging_dir.iterdir()) == []


def test_sweep_removes_debris_but_keeps_committed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    meta = _push(store, tiny_onnx_bytes())
    (store.staging_dir / "commit-deadbeef").mkdir()
    half = store.artifacts_dir / ("b" * 64)
    half.mkdir()
    (half / "model.onnx").write_bytes(b"renamed but never acknowledged")
    ArtifactStore(tmp_path)
    assert [m.sha256 for m in store.list()] == [meta.sha256]
    assert not (store.staging_dir / "commit-deadbeef").exists() and not half.exists()


def test_delete(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    meta = _push(store, tiny_onnx_bytes())
    assert store.delete(meta.sha256) and store.get(meta.sha256) is None
    assert not store.delete(meta.sha256)


def test_concurrent_push_of_same_artifact_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()
    with store.begin_push(_header(data)), pytest.raises(OffsetMismatch, match="in progress"):
        store.begin_push(_header(data))
    assert os.path.exists(store.staging_dir / f"{hashlib.sha256(data).hexdigest()}.part")


def test_disk_full_mid_write_keeps_nothing_and_the_store_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import edge_agent.store.upload as store_module

    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()

    def disk_full(fd: int, buf: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with store.begin_push(_header(data)) as upload:
        upload.write(0, data[:1000])
        monkeypatch.setattr(store_module, "_write", disk_full)
        with pytest.raises(QuotaExceeded, match="filled up"):
            upload.write(1000, data[1000:2000])
    monkeypatch.undo()
    assert list(store.staging_dir.iterdir()) == [] and store.list() == []
    assert _push(store, data).size_bytes == len(data)  # the next push succeeds


def test_pushes_in_flight_reserve_their_size_against_the_quota(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, StoreLimits(max_artifact_bytes=1 << 20, quota_bytes=10_000))
    first, second = b"PK\x03\x04" + os.urandom(5996), b"PK\x03\x04" + os.urandom(5996)  # TorchScript zips, by header
    upload = store.begin_push(_header(first, fmt="torchscript"))  # nothing written yet, but 6000 bytes are reserved
    with pytest.raises(QuotaExceeded, match="reserved"):
        store.begin_push(_header(second, fmt="torchscript"))
    with upload:
        upload.write(0, first)
        upload.finish()
    assert store.used_bytes() == 6000
    with pytest.raises(QuotaExceeded):
        store.begin_push(_header(second, fmt="torchscript"))


@pytest.mark.parametrize(
    ("manifest", "match"),
    [
        ('{"format": "onnx", "precision": "fp32", "file": "model.onnx"}', "'file' must be an object"),
        ('{"format": ["onnx"], "precision": "fp32", "file": {}}', "'format' must be one of"),
        ('{"format": "onnx", "precision": 8, "file": {}}', "'precision' must be one of"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper"),
        ('{"format": "onnx"', "not valid JSON"),
        ("[]", "must be a JSON object"),
    ],
)
def test_malformed_manifests_are_refused_by_name(tmp_path: Path, manifest: str, match: str) -> None:
    data = tiny_onnx_bytes()
    header = PushHeader(hashlib.sha256(data).hexdigest(), len(data), "m", manifest, 0)
    with pytest.raises(ArtifactRejected, match=match):
        ArtifactStore(tmp_path).begin_push(header)
    assert not list((tmp_path / "staging").iterdir())


def test_abandoned_pushes_make_room_instead_of_filling_the_quota(tmp_path: Path) -> None:
    # Pushes abandoned half-way used to hold their staged bytes against the quota for 7 days, invisible in the
    # listing: a full "quota" with nothing to delete. They are a resume cache: the oldest go first when room is needed.
    store = ArtifactStore(tmp_path, StoreLimits(max_artifact_bytes=1 << 20, quota_bytes=10_000))
    abandoned = [b"PK\x03\x04" + os.urandom(3996) for _ in range(2)]
    for data in abandoned:
        with store.begin_push(_header(data, fmt="torchscript")) as upload:
            upload.write(0, data[:3000])  # then the client vanishes
    older = store.staging_dir / f"{hashlib.sha256(abandoned[0]).hexdigest()}.part"
    os.utime(older, (older.stat().st_atime - 60, older.stat().st_mtime - 60))
    assert store.used_bytes() == 6000 and store.list() == []
    fresh = b"PK\x03\x04" + os.urandom(5996)
    meta = _push(store, fresh, fmt="torchscript")
    assert store.get(meta.sha256) is not None
    staged = [store.staged_bytes(hashlib.sha256(d).hexdigest()) for d in abandoned]
    assert staged == [0, 3000]  # the older one made room; the newer still resumes
    assert store.used_bytes() == 9000


def test_a_staged_file_longer_than_the_artifact_cannot_block_its_push(tmp_path: Path) -> None:
    # A push that declared a larger size once left more bytes staged than the real artifact has; every honest push
    # was then told to "resume from" a byte past its end.
    store = ArtifactStore(tmp_path)
    data = tiny_onnx_bytes()
    sha = hashlib.sha256(data).hexdigest()
    liar = json.dumps({"format": "onnx", "precision": "fp32", "file": {"sha256": sha, "size_bytes": len(data) + 4096}})
    with store.begin_push(PushHeader(sha, len(data) + 4096, "m", liar, 0)) as upload:
        upload.write(0, data + b"\x00" * 2048)
    assert store.staged_bytes(sha) == len(data) + 2048
    meta = _push(store, data)
    assert store.model_path(meta.sha256).read_bytes() == data


@pytest.mark.parametrize(
    ("fmt", "spec", "match"),
    [
        ("torchscript", {"dtype": "float32"}, "needs input.shape"),
        ("onnx", {"shape": []}, "must be a batch dimension"),
        ("onnx", {"shape": "batch"}, "must be a batch dimension"),
        ("onnx", {"shape": ["batch", "channels", 28, 28]}, "must be a batch dimension"),
        ("onnx", {"shape": ["batch", 1, 1 << 31]}, "must be a batch dimension"),
        ("onnx", {"shape": ["batch", 4], "dtype": "int8x"}, "input.dtype"),
    ],
)
def test_inputs_a_worker_cannot_feed_are_refused_at_push(tmp_path: Path, fmt: str, spec: dict, match: str) -> None:
    # Such manifests used to be accepted, and every benchmark then failed with "KeyError: 'shape'" or worse.
    store = ArtifactStore(tmp_path)
    data = b"PK\x03\x04" + os.urandom(100) if fmt == "torchscript" else tiny_onnx_bytes()
    sha = hashlib.sha256(data).hexdigest()
    manifest = {"format": fmt, "precision": "fp32", "input": spec, "file": {"sha256": sha, "size_bytes": len(data)}}
    with pytest.raises(ArtifactRejected, match=match):
        store.begin_push(PushHeader(sha, len(data), "m", json.dumps(manifest), 0))
    assert list(store.staging_dir.iterdir()) == []


def test_store_folders_removed_under_a_running_agent_are_made_again(tmp_path: Path) -> None:
    import shutil

    store = ArtifactStore(tmp_path)
    shutil.rmtree(store.staging_dir)
    shutil.rmtree(store.artifacts_dir)
    assert store.list() == []
    assert _push(store, tiny_onnx_bytes()).size_bytes == len(tiny_onnx_bytes())
