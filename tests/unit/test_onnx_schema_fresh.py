"""The guard's ONNX schema table must be what scripts/gen_onnx_schema.py makes from the installed onnx."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.unit


def test_onnx_schema_table_is_fresh() -> None:
    spec = importlib.util.spec_from_file_location("gen_onnx_schema", REPO / "scripts" / "gen_onnx_schema.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_onnx_schema"] = module
    spec.loader.exec_module(module)
    committed = (REPO / "agent" / "edge_agent" / "runtimes" / "onnx_schema.py").read_text(encoding="utf-8")
    assert committed == module.render(), "agent/edge_agent/runtimes/onnx_schema.py is stale; run scripts/gen_onnx_schema.py"
