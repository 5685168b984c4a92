from __future__ import annotations

from pathlib import Path

import pytest
from edge_agent.contract.files import write_durably

pytestmark = pytest.mark.unit


def test_write_durably_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_bytes(b"old")
    write_durably(target, b"new contents", mode=0o600)
    assert target.read_bytes() == b"new contents"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "weights.pt"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_durably(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]
