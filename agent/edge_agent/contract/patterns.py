"""The identifiers both ends of the wire check, in one place: an artifact's sha256, and the names that are
metadata only (an artifact's name, a run id), never paths."""

from __future__ import annotations

import re
from typing import Final

#: An artifact's identity: the sha256 of its model file, 64 lowercase hex characters.
SHA256_PATTERN: Final = re.compile(r"^[0-9a-f]{64}$")
#: An artifact's name and a run id: metadata, never part of a path.
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: A run id is a name (an idempotency key the client picks, or the device's uuid).
RUN_ID_PATTERN: Final = NAME_PATTERN
