"""Bearer-token files, read the same way by the host SDK (a client's ``--token-file``) and the daemon."""

from __future__ import annotations

from pathlib import Path

#: The shortest token accepted from a file.
MIN_TOKEN_CHARS = 16


def read_token(path: Path) -> str:
    """The first line of a token file; refuses short tokens."""
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"token file {path} must hold a token of at least {MIN_TOKEN_CHARS} characters")
    return token
