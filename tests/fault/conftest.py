"""Fixtures of the fault tests: the agent as a subprocess that is killed, restarted or stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import TOKEN


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    return path
