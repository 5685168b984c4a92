"""The committed generated code must be exactly what scripts/gen_protos.py makes from protos/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.unit


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    generated = module.generate(tmp_path)
    assert generated, "protoc produced nothing"
    for path in generated:
        committed = REPO / "agent" / path.relative_to(tmp_path)
        assert committed.is_file(), f"{committed} is not committed; run scripts/gen_protos.py"
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale; run scripts/gen_protos.py"
