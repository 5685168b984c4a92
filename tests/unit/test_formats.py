"""One table of artifact formats (edge_agent.contract.formats): every layer of the agent knows each format in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_agent.contract.errors import ArtifactRejected
from edge_agent.contract.formats import MODEL_FORMATS, missing_runtime
from edge_agent.runs import journal_entries as journal
from edge_agent.runtimes import registry
from edge_agent.store import catalogue as store
from edge_agent.v1 import agent_pb2 as pb

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("fmt", sorted(MODEL_FORMATS))
def test_every_format_is_known_to_the_wire_the_journal_the_store_and_the_runs(fmt: str, tmp_path: Path) -> None:
    spec = MODEL_FORMATS[fmt]
    assert pb.RuntimeKind.Value(f"RUNTIME_{spec.runtime.upper()}") > 0  # raises for a name the proto lacks
    assert registry.WIRE_NAMES[f"RUNTIME_{spec.runtime.upper()}"] == spec.runtime
    assert spec.runtime in journal.RUNTIMES  # or its results would be set aside at the next start
    assert spec.runtime in registry.BY_NAME  # or the worker could not run it
    assert store.MODEL_FILES[fmt] == spec.file_name
    garbage = tmp_path / spec.file_name
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactRejected) as refused:
        store.check_content(garbage, fmt)
    assert "cannot check artifacts" not in str(refused.value)  # a check of its own, not the fallback


def test_missing_runtime_names_the_runtime_and_what_to_install() -> None:
    assert missing_runtime("onnx", ["onnxruntime"]) is None
    reason = missing_runtime("torchscript", ["onnxruntime"])
    assert reason is not None and "no torch runtime" in reason and "torch==" in reason
    assert "known" in (missing_runtime("tflite", ["onnxruntime"]) or "")
