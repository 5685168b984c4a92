"""Files as the wire carries them: pushed in chunks of at most :data:`MAX_CHUNK_BYTES` (the device refuses
larger ones), and identified by their sha256. The host SDK chunks with this; the device's store bounds with it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

#: The largest chunk of a push (the server's receive limit is this plus framing).
MAX_CHUNK_BYTES: Final = 1 << 20


def iter_file_chunks(path: Path, offset: int = 0, chunk: int = MAX_CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of ``path`` from ``offset`` on, ``chunk`` bytes at a time."""
    with path.open("rb") as fh:
        fh.seek(offset)
        while data := fh.read(chunk):
            yield offset, data
            offset += len(data)


def sha256_file(path: Path, chunk: int = MAX_CHUNK_BYTES) -> str:
    """The sha256 of a file's bytes, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
