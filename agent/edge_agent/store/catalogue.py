"""The device's artifact store: content-addressed by sha256, crash-safe, bounded.

Layout under the store root::

    artifacts/<sha256>/model.onnx|model.pt|model.pte   committed, verified artifacts (read-only from here on)
    artifacts/<sha256>/manifest.json
    artifacts/<sha256>/meta.json             name, format, precision, size, committed_at
    staging/<sha256>.part                    bytes of a push in progress or interrupted (resumable)
    staging/commit-*/                        a commit being assembled (swept at start)

Upload state machine (one push = one PushArtifact stream)::

    StatArtifact(sha) ─▶ present?  yes ─▶ done (one round trip)
                                   no  ─▶ staged_bytes = size of staging/<sha>.part (0 if none)
    PushArtifact: header(sha, size, name, manifest, offset = staged_bytes)
        ─ checks: sha256 is 64 hex; 0 < size ≤ max_artifact_bytes; quota and free disk for size − offset,
          counting every push in flight at its full declared size (a reservation taken before the first byte);
          name matches NAME_PATTERN; manifest parses, its file.sha256/size/format agree with the header;
          offset == bytes staged (else FAILED_PRECONDITION). Nothing is written before these pass.
        ─ chunks: offset must equal the bytes written so far; data ≤ 1 MiB; never past size.
        ─ while chunks land, a reader thread hashes the staged file *read back from disk*, following the writer
          (a resumed push re-reads the staged prefix), so the check costs little wall time.
        ─ stream ends with size bytes staged: fsync, finish the read-back hash, compare; mismatch → DATA_LOSS
          and the staging file is removed; match → check the content (ONNX guard / TorchScript zip), assemble
          staging/commit-*/, fsync, rename to artifacts/<sha>/, fsync the directory. Only then is OK returned.
        ─ stream ends short (client gone): the bytes stay staged for resume.
    PushArtifact of an artifact already committed: its manifest is read as a new push's (the size cap, the typed
        parse, file.sha256/size_bytes against the header) and must name the stored format and precision; then
        already_present, nothing written.

Paths are derived only from the sha256; names are metadata and never touch the filesystem. Staging files are
opened with O_NOFOLLOW so a planted symlink cannot redirect a write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.contract.errors import (
    ArtifactNotFound,
    ArtifactRejected,
    OffsetMismatch,
    QuotaExceeded,
)
from edge_agent.contract.files import fsync_dir
from edge_agent.contract.formats import EVALSET_FORMAT
from edge_agent.contract.manifest import MAX_MANIFEST_BYTES, MODEL_FILES, parse_manifest
from edge_agent.contract.patterns import NAME_PATTERN, SHA256_PATTERN
from edge_agent.runtimes.registry import BY_FORMAT
from edge_agent.store import evalsets
from edge_agent.store.records import ArtifactMeta, PushHeader, StoreLimits, disk_error
from edge_agent.store.upload import Upload

#: Interrupted pushes older than this are swept at start.
STAGING_MAX_AGE_SECONDS = 7 * 24 * 3600
_LOGGER = logging.getLogger("edge_agent.store")


def check_sha256(value: str) -> str:
    if not SHA256_PATTERN.fullmatch(value or ""):
        raise ArtifactRejected(f"sha256 must be 64 lowercase hex characters, got {value[:80]!r}")
    return value


def check_content(path: Path, fmt: str) -> None:
    """Reject a model file that is not what its manifest says (before it becomes visible)."""
    if fmt == EVALSET_FORMAT:  # an evaluation set (edge_agent.store.evalsets): a bounded .npz of .npy arrays
        evalsets.check_file(path)
        return
    runtime = BY_FORMAT.get(fmt)
    if runtime is not None:  # a model: its runtime's own check (edge_agent.runtimes.registry)
        runtime.check_content(path)
        return
    raise ArtifactRejected(f"this agent cannot check artifacts of format {fmt!r}; it takes {', '.join(MODEL_FILES)}")


def _read_manifest(header: PushHeader) -> tuple[str, str]:
    """A push's manifest, read the one way every push is: at most ``MAX_MANIFEST_BYTES``, parsed with its types
    checked (:func:`parse_manifest`), its ``file`` agreeing with the header. Returns its format and precision.

    Raises:
        ArtifactRejected: naming what is wrong.
    """
    if len(header.manifest_json.encode()) > MAX_MANIFEST_BYTES:
        raise ArtifactRejected(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    manifest = parse_manifest(header.manifest_json)
    file, fmt, precision = manifest["file"], manifest["format"], manifest["precision"]
    size = file.get("size_bytes")
    if file.get("sha256") != header.sha256 or type(size) is not int or size != header.size_bytes:
        raise ArtifactRejected("manifest file.sha256 / file.size_bytes do not match the push header")
    return fmt, precision


def _fault(point: str) -> None:
    """Test-only crash points (EDGE_AGENT_FAULT=<point>); inert unless EDGE_AGENT_ENABLE_FAULTS=1."""
    if os.environ.get("EDGE_AGENT_ENABLE_FAULTS") == "1" and os.environ.get("EDGE_AGENT_FAULT") == point:
        os._exit(97)


class ArtifactStore:
    """Thread-safe; one instance per store root."""

    def __init__(self, root: Path, limits: StoreLimits | None = None) -> None:
        self.root = root
        self.limits = limits or StoreLimits()
        self.artifacts_dir = root / "artifacts"
        self.staging_dir = root / "staging"
        self._make_dirs()
        self._lock = threading.Lock()
        #: sha256 → declared size of every push in progress: its reservation against the quota and the disk.
        self._active: dict[str, int] = {}
        self.sweep()

    def _make_dirs(self) -> None:
        """The store's folders; made again if someone removed them under a running agent (it heals, not fails)."""
        for d in (self.artifacts_dir, self.staging_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    # ----- queries -------------------------------------------------------------------------------------------
    def get(self, sha256: str) -> ArtifactMeta | None:
        """The committed artifact, or None when the device does not have it.

        Raises:
            OSError: the store cannot be read (out of file descriptors, I/O error): never reported as "absent".
        """
        check_sha256(sha256)
        meta = self.artifacts_dir / sha256 / "meta.json"
        try:
            return ArtifactMeta(**json.loads(meta.read_text()))
        except (FileNotFoundError, NotADirectoryError, ValueError, TypeError):
            return None

    def model_path(self, sha256: str) -> Path:
        meta = self.get(sha256)
        if meta is None:
            raise ArtifactNotFound(f"artifact {sha256} is not on this device; push it first")
        return self.artifacts_dir / sha256 / MODEL_FILES[meta.format]

    def manifest(self, sha256: str) -> dict[str, Any]:
        return json.loads((self.artifacts_dir / check_sha256(sha256) / "manifest.json").read_text())

    def staged_bytes(self, sha256: str) -> int:
        """Bytes of an interrupted push held for resume (0 for none, or for anything but a regular file)."""
        try:
            info = (self.staging_dir / f"{check_sha256(sha256)}.part").lstat()
        except FileNotFoundError:
            return 0
        return info.st_size if stat.S_ISREG(info.st_mode) else 0

    def list(self) -> list[ArtifactMeta]:
        try:
            entries = list(self.artifacts_dir.iterdir())
        except FileNotFoundError:  # removed under the running agent: nothing is there, and it heals
            self._make_dirs()
            return []
        metas = [m for d in entries if SHA256_PATTERN.fullmatch(d.name) and (m := self.get(d.name))]
        return sorted(metas, key=lambda m: m.committed_at)

    def used_bytes(self, committed: Sequence[ArtifactMeta] | None = None) -> int:
        """Committed bytes, plus idle staged bytes, plus the full declared size of every push in flight."""
        committed = self.list() if committed is None else committed
        staged = sum(p.lstat().st_size for p in self.staging_dir.glob("*.part") if p.name[:-5] not in self._active)
        return sum(m.size_bytes for m in committed) + staged + sum(self._active.values())

    # ----- push ----------------------------------------------------------------------------------------------
    def already_present(self, header: PushHeader) -> ArtifactMeta | None:
        """The committed artifact a push header names, or None when the device does not have it.

        The push's manifest is read as for a new push (:func:`_read_manifest`: bounded, typed, agreeing with the
        header), and its format and precision must be the stored artifact's: the same bytes claimed as another
        artifact kind would make the client believe it has pushed what it has not.

        Raises:
            ArtifactRejected: a malformed sha256 or manifest, or a manifest that disagrees with the stored artifact.
        """
        existing = self.get(check_sha256(header.sha256))
        if existing is None:
            return None
        fmt, precision = _read_manifest(header)
        if (fmt, precision) != (existing.format, existing.precision):
            raise ArtifactRejected(
                f"{existing.sha256} is already on this device as a {existing.precision} {existing.format} "
                f"artifact; this push's manifest says {precision} {fmt}: fix the manifest"
            )
        return existing

    def begin_push(self, header: PushHeader) -> Upload:
        """Validate a push header and reserve the upload; nothing is written until this passes.

        Raises:
            ArtifactRejected, QuotaExceeded, OffsetMismatch.
        """
        check_sha256(header.sha256)
        fmt, precision = self._check_header(header)
        self._make_dirs()
        with self._lock:
            if header.sha256 in self._active:
                raise OffsetMismatch(f"a push of {header.sha256} is already in progress; retry when it ends")
            part = self.staging_dir / f"{header.sha256}.part"
            if part.is_symlink() or (part.exists() and not part.is_file()):
                part.unlink()  # not ours: something planted; never written through (O_NOFOLLOW), now removed
            staged = self.staged_bytes(header.sha256)
            if staged > header.size_bytes:
                # More bytes than this artifact has: they are not its prefix (a push that declared another size).
                part.unlink(missing_ok=True)
                staged = 0
            if header.offset != staged:
                raise OffsetMismatch(
                    f"push starts at byte {header.offset} but the device has {staged} bytes staged; resume from {staged}"
                )
            self._check_space(header.sha256, header.size_bytes, staged)
            self._active[header.sha256] = header.size_bytes
        try:
            return Upload(self, header, fmt, precision)
        except OSError as exc:
            self.release(header.sha256)
            raise disk_error(exc, "starting the push") from None

    def _check_header(self, header: PushHeader) -> tuple[str, str]:
        if header.size_bytes <= 0:
            raise ArtifactRejected(f"size_bytes must be positive, got {header.size_bytes}")
        if header.size_bytes > self.limits.max_artifact_bytes:
            raise QuotaExceeded(
                f"artifact of {header.size_bytes} bytes exceeds the maximum of {self.limits.max_artifact_bytes} bytes"
            )
        if not 0 <= header.offset <= header.size_bytes:
            raise ArtifactRejected(f"offset {header.offset} is outside 0..{header.size_bytes}")
        if not NAME_PATTERN.fullmatch(header.name or ""):
            raise ArtifactRejected(f"name {header.name[:40]!r} must match {NAME_PATTERN.pattern} (it is metadata, never a path)")
        return _read_manifest(header)

    def _check_space(self, sha256: str, size: int, staged: int) -> None:
        """Called with the lock held: the push's whole declared size must fit beside everything else. Staged bytes
        of abandoned pushes are a resume cache: they make room, oldest first, before a push is refused."""
        committed = self.list()  # reads every meta.json: once per push
        if len(committed) + len(self._active) >= self.limits.max_artifacts:
            raise QuotaExceeded(f"the store holds its maximum of {self.limits.max_artifacts} artifacts; delete some")
        used = self.used_bytes(committed) - staged  # this push's own staged bytes are part of its reservation
        incoming = size - staged
        if used + size > self.limits.quota_bytes:
            used -= self._evict_idle_staging(used + size - self.limits.quota_bytes, keep=sha256)
        if used + size > self.limits.quota_bytes:
            raise QuotaExceeded(
                f"quota: {used} bytes used or reserved by other pushes + {size} for this one exceeds the quota of "
                f"{self.limits.quota_bytes} bytes; delete artifacts (edge-agent list / delete) or retry when other "
                "pushes end"
            )
        free = self._free_bytes()
        if incoming + self.limits.reserve_bytes > free:
            self._evict_idle_staging(incoming + self.limits.reserve_bytes - free, keep=sha256)
            free = self._free_bytes()
        if incoming + self.limits.reserve_bytes > free:
            raise QuotaExceeded(
                f"disk: {free} bytes free, {incoming} needed plus a {self.limits.reserve_bytes}-byte reserve; "
                "free space on the device or delete artifacts"
            )

    def _free_bytes(self) -> int:
        """Free bytes on the store's filesystem, less what pushes in flight will still write."""
        stat = os.statvfs(self.root)
        in_flight = sum(size - self.staged_bytes(sha) for sha, size in self._active.items())
        return stat.f_bavail * stat.f_frsize - in_flight

    def _evict_idle_staging(self, needed: int, *, keep: str) -> int:
        """Remove staged files of pushes not in progress (not ``keep``), oldest first, until ``needed`` bytes are
        freed; returns the bytes freed. Called with the lock held."""
        idle = []
        for part in self.staging_dir.glob("*.part"):
            sha = part.name[:-5]
            if sha in self._active or sha == keep:
                continue
            with contextlib.suppress(OSError):
                info = part.lstat()
                idle.append((info.st_mtime, info.st_size, part))
        freed = 0
        for _mtime, size, part in sorted(idle, key=lambda item: item[0]):
            if freed >= needed:
                break
            part.unlink(missing_ok=True)
            freed += size
            _LOGGER.info("removed %s (%d bytes) of an abandoned push to make room", part.name, size)
        return freed

    def commit(self, upload: Upload) -> ArtifactMeta:
        """Check the content of verified bytes and make them visible (called by :meth:`Upload.finish`)."""
        header = upload.header
        part = self.staging_dir / f"{header.sha256}.part"
        try:
            check_content(part, upload.format)
        except ArtifactRejected:
            part.unlink(missing_ok=True)
            raise
        _fault("after_verify_before_rename")
        meta = ArtifactMeta(
            header.sha256,
            header.size_bytes,
            header.name,
            upload.format,
            upload.precision,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
        final = self.artifacts_dir / header.sha256
        if final.exists():
            existing = self.get(header.sha256)
            if existing is not None:  # pushed concurrently by someone else: same bytes by definition
                part.unlink(missing_ok=True)
                return existing
            # A folder whose meta.json cannot be read was never a usable artifact: replace it.
            final.replace(self.staging_dir / f"delete-{header.sha256}-{time.monotonic_ns()}")
        assembly = self.staging_dir / f"commit-{header.sha256}-{os.getpid()}-{threading.get_ident()}"
        try:
            assembly.mkdir()
            part.replace(assembly / MODEL_FILES[upload.format])
            for name, text in (("manifest.json", header.manifest_json), ("meta.json", meta.to_json())):
                with (assembly / name).open("w", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
            fsync_dir(assembly)
            assembly.replace(final)
            _fault("after_rename_before_dir_fsync")
            fsync_dir(self.artifacts_dir)
        except OSError as exc:
            shutil.rmtree(assembly, ignore_errors=True)
            part.unlink(missing_ok=True)
            raise disk_error(exc, "committing the artifact") from None
        except BaseException:
            shutil.rmtree(assembly, ignore_errors=True)
            raise
        return meta

    def release(self, sha256: str) -> None:
        with self._lock:
            self._active.pop(sha256, None)

    # ----- maintenance ---------------------------------------------------------------------------------------
    def delete(self, sha256: str) -> bool:
        """Remove a committed artifact and any staged bytes of it; refuses while a push of it is in progress."""
        check_sha256(sha256)
        with self._lock:  # held throughout: a push of it cannot begin halfway
            if sha256 in self._active:
                raise OffsetMismatch(f"a push of {sha256} is in progress; delete it when the push has ended")
            return self._delete_locked(sha256)

    def _delete_locked(self, sha256: str) -> bool:
        removed = False
        target = self.artifacts_dir / sha256
        if target.exists():
            trash = self.staging_dir / f"delete-{sha256}-{time.monotonic_ns()}"
            target.replace(trash)  # atomic disappearance, then the slow removal
            shutil.rmtree(trash, ignore_errors=True)
            removed = True
        with contextlib.suppress(FileNotFoundError):
            (self.staging_dir / f"{sha256}.part").unlink()
            removed = True
        return removed

    def sweep(self) -> None:
        """At start: remove half-assembled commits and deletions, and interrupted pushes past the resume window."""
        now = time.time()
        for entry in self.staging_dir.iterdir():
            if entry.name.startswith(("commit-", "delete-")):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            elif entry.suffix == ".part" and (entry.is_symlink() or now - entry.lstat().st_mtime > STAGING_MAX_AGE_SECONDS):
                entry.unlink(missing_ok=True)
        for entry in self.artifacts_dir.iterdir():
            # A directory without a readable meta.json was never acknowledged (crash between rename and fsync) or
            # was damaged since: drop it, so a re-push commits it again.
            if entry.is_symlink() or not SHA256_PATTERN.fullmatch(entry.name) or self.get(entry.name) is None:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
