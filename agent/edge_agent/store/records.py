"""The store's records and limits: what a push header says, what a committed artifact is, how much may be held;
and how a full disk is reported."""

from __future__ import annotations

import errno
import json
from dataclasses import asdict, dataclass

from edge_agent.contract.errors import QuotaExceeded


@dataclass(frozen=True)
class StoreLimits:
    max_artifact_bytes: int = 512 << 20
    quota_bytes: int = 4 << 30
    max_artifacts: int = 1000
    #: Free space always left on the filesystem.
    reserve_bytes: int = 64 << 20


@dataclass(frozen=True)
class ArtifactMeta:
    sha256: str
    size_bytes: int
    name: str
    format: str
    precision: str
    committed_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class PushHeader:
    sha256: str
    size_bytes: int
    name: str
    manifest_json: str
    offset: int = 0


def disk_error(exc: OSError, doing: str) -> Exception:
    """ENOSPC / EDQUOT become RESOURCE_EXHAUSTED for the client; other I/O errors stay OSErrors (INTERNAL)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return QuotaExceeded(f"the device's disk is full ({doing}); nothing was kept: free space on the device and retry")
    return exc
