"""One push in progress: bytes written to ``staging/<sha256>.part`` in order, hashed as they are read back from
disk beside the receive, fsynced and verified before the store commits them (see :mod:`edge_agent.store.catalogue`
for the upload state machine)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Protocol

from edge_agent.contract.chunks import MAX_CHUNK_BYTES
from edge_agent.contract.errors import ArtifactRejected, IntegrityError, QuotaExceeded
from edge_agent.store.records import ArtifactMeta, PushHeader, disk_error


class UploadOwner(Protocol):
    """What an upload needs of its store (:class:`edge_agent.store.catalogue.ArtifactStore`)."""

    staging_dir: Path

    def release(self, sha256: str) -> None: ...

    def commit(self, upload: Upload) -> ArtifactMeta: ...


#: The write call, a seam for the disk-full (ENOSPC) test.
_write = os.write

#: The read-back thread flushes the staged file to disk every this many bytes.
_SYNC_EVERY_BYTES = 8 << 20


class _ReadBackHasher(threading.Thread):
    """Hashes the staged file by reading it back from disk, following the writer as chunks land.

    Reading back (rather than hashing the bytes in memory) checks what the kernel actually stored, and doing it
    concurrently with the receive keeps that check almost free in wall time: hashing and file reads release the
    GIL, so this runs beside the gRPC thread that writes.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(name="edge-agent-readback", daemon=True)
        self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._digest = hashlib.sha256()
        self._cond = threading.Condition()
        self._available = 0
        self._closed = False
        self._error: BaseException | None = None
        self.hashed = 0
        self._synced = 0

    def advance(self, position: int) -> None:
        with self._cond:
            self._available = position
            self._cond.notify()

    def run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self.hashed >= self._available and not self._closed:
                        self._cond.wait()
                    target = self._available
                    if self.hashed >= target and self._closed:
                        return
                while self.hashed < target:
                    block = os.pread(self._fd, min(MAX_CHUNK_BYTES, target - self.hashed), self.hashed)
                    if not block:
                        raise OSError(f"staged file is shorter than the {target} bytes written")
                    self._digest.update(block)
                    self.hashed += len(block)
                    if self.hashed - self._synced >= _SYNC_EVERY_BYTES:
                        # Flush as we go, beside the receive: the final fsync then only has the tail to write.
                        os.fdatasync(self._fd)
                        self._synced = self.hashed
        except BaseException as exc:  # reported by result()
            self._error = exc
        finally:
            os.close(self._fd)

    def result(self) -> str:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self.join()
        if isinstance(self._error, OSError):
            error = disk_error(self._error, "flushing the push")
            if isinstance(error, QuotaExceeded):
                raise error
        if self._error is not None:
            raise IntegrityError(f"could not read the staged bytes back: {self._error}")
        return self._digest.hexdigest()

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._available = self.hashed
            self._cond.notify()
        self.join()


class Upload:
    """One push in progress; use as a context manager and call :meth:`write` per chunk, then :meth:`finish`."""

    def __init__(self, store: UploadOwner, header: PushHeader, fmt: str, precision: str) -> None:
        self.store = store
        self.header = header
        self.format = fmt
        self.precision = precision
        self.position = header.offset
        self.received = 0
        path = store.staging_dir / f"{header.sha256}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        os.ftruncate(self._fd, header.offset)  # drop any torn tail beyond the acknowledged offset
        os.lseek(self._fd, header.offset, os.SEEK_SET)
        self._hasher = _ReadBackHasher(path)  # a resumed push re-reads the staged prefix from disk too
        self._hasher.advance(header.offset)
        self._hasher.start()

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the read-back hasher, close the file and release the reservation (bytes stay staged for resume)."""
        if self._hasher.is_alive():
            self._hasher.stop()
        self._close_fd()
        self.store.release(self.header.sha256)

    def write(self, offset: int, data: bytes) -> None:
        if offset != self.position:
            raise ArtifactRejected(f"chunk offset {offset} is not the next byte ({self.position}); send chunks in order")
        if len(data) > MAX_CHUNK_BYTES:
            raise ArtifactRejected(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK_BYTES}")
        if self.position + len(data) > self.header.size_bytes:
            raise ArtifactRejected(f"data runs past the declared size of {self.header.size_bytes} bytes")
        view = memoryview(data)
        try:
            while view:
                written = _write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # disk full mid-write: give the space back, keep nothing
                self._hasher.stop()
                self._close_fd()
                (self.store.staging_dir / f"{self.header.sha256}.part").unlink(missing_ok=True)
                raise QuotaExceeded("the device's disk filled up during the push; nothing was kept") from None
            raise
        self.position += len(data)
        self.received += len(data)
        self._hasher.advance(self.position)

    @property
    def complete(self) -> bool:
        return self.position == self.header.size_bytes

    def finish(self) -> ArtifactMeta:
        """fsync, verify the bytes read back from disk, and commit. Raises IntegrityError (DATA_LOSS) on a mismatch."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._hasher.stop()
            self._close_fd()
            (self.store.staging_dir / f"{self.header.sha256}.part").unlink(missing_ok=True)
            raise disk_error(exc, "flushing the push") from None
        self._close_fd()
        actual = self._hasher.result()
        if actual != self.header.sha256:
            (self.store.staging_dir / f"{self.header.sha256}.part").unlink(missing_ok=True)
            raise IntegrityError(f"received bytes hash to {actual}, not the declared {self.header.sha256}; nothing was kept")
        return self.store.commit(self)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)  # bytes a later StatArtifact reports as staged are on disk
            os.close(self._fd)
            self._fd = -1
