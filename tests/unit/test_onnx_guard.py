from __future__ import annotations

import onnx
import pytest
from agent_helpers import tiny_onnx_bytes
from edge_agent.errors import ArtifactRejected
from edge_agent.onnx_guard import MAX_DEPTH, check_model_bytes
from onnx import TensorProto, helper

pytestmark = pytest.mark.unit


def test_plain_model_passes() -> None:
    check_model_bytes(tiny_onnx_bytes())


def test_external_data_is_refused() -> None:
    model = onnx.load_from_string(tiny_onnx_bytes())
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    with pytest.raises(ArtifactRejected, match="external data"):
        check_model_bytes(model.SerializeToString())


def test_custom_domain_node_is_refused() -> None:
    model = onnx.load_from_string(tiny_onnx_bytes())
    model.graph.node.append(helper.make_node("Evil", ["logits"], ["out"], domain="com.attacker"))
    with pytest.raises(ArtifactRejected, match=r"com\.attacker"):
        check_model_bytes(model.SerializeToString())


def test_subgraph_depth_bomb_is_refused() -> None:
    inner = helper.make_graph([], "g0", [], [])
    for depth in range(MAX_DEPTH + 2):
        node = helper.make_node("If", ["c"], ["o"], then_branch=inner, else_branch=inner)
        inner = helper.make_graph([node], f"g{depth + 1}", [], [])
    model = helper.make_model(inner)
    with pytest.raises(ArtifactRejected, match="deeper"):
        check_model_bytes(model.SerializeToString())


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00", b"\xff" * 20, b"\x3a\x05abc"])
def test_garbage_is_refused_cleanly(data: bytes) -> None:
    with pytest.raises(ArtifactRejected):
        check_model_bytes(data)
