from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from agent_helpers import tiny_onnx_bytes
from edge_agent.contract.errors import ArtifactRejected
from edge_agent.runtimes.onnx_guard import MAX_GRAPH_DEPTH, check_model_bytes, check_model_file
from onnx import helper
from reliability import hostile_onnx

EXTERNAL = sorted(name for name in hostile_onnx.CORPUS if "external" in name)
CUSTOM = sorted(name for name in hostile_onnx.CORPUS if name.startswith("custom_domain"))

pytestmark = pytest.mark.unit


def test_plain_model_passes() -> None:
    check_model_bytes(tiny_onnx_bytes())


@pytest.mark.parametrize("place", EXTERNAL)
def test_external_data_is_refused_wherever_it_hides(place: str, tmp_path: Path) -> None:
    data = hostile_onnx.CORPUS[place]().SerializeToString()
    with pytest.raises(ArtifactRejected, match="external data"):
        check_model_bytes(data)
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(ArtifactRejected, match="external data"):  # the file path, too: no BufferError, no leak
        check_model_file(str(path))
    path.unlink()  # nothing holds the file open


@pytest.mark.parametrize("place", CUSTOM)
def test_custom_domain_node_is_refused_wherever_it_hides(place: str) -> None:
    with pytest.raises(ArtifactRejected, match=hostile_onnx.EVIL_DOMAIN.replace(".", r"\.")):
        check_model_bytes(hostile_onnx.CORPUS[place]().SerializeToString())


def test_call_of_a_model_local_function_is_accepted() -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])
    opset = helper.make_opsetid("", 17)
    fn = helper.make_function("local.fns", "F", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])], [opset])
    graph = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local.fns")], "g", [x], [y])
    model = helper.make_model(graph, functions=[fn], opset_imports=[opset, helper.make_opsetid("local.fns", 1)])
    check_model_bytes(model.SerializeToString())


def test_subgraph_depth_bomb_is_refused() -> None:
    inner = helper.make_graph([], "g0", [], [])
    for depth in range(MAX_GRAPH_DEPTH + 2):
        node = helper.make_node("If", ["c"], ["o"], then_branch=inner, else_branch=inner)
        inner = helper.make_graph([node], f"g{depth + 1}", [], [])
    model = helper.make_model(inner)
    with pytest.raises(ArtifactRejected, match="deeper"):
        check_model_bytes(model.SerializeToString())


def test_unknown_length_delimited_field_is_refused() -> None:
    # Field 99 of TensorProto does not exist in the schema: fail closed rather than skip what may be a tensor.
    model = onnx.load_from_string(tiny_onnx_bytes())
    tensor = model.graph.initializer[0].SerializeToString() + bytes([(99 << 3 | 2) & 0x7F | 0x80, 99 >> 4, 3]) + b"abc"
    model.graph.initializer[0].ParseFromString(tensor)
    with pytest.raises(ArtifactRejected, match="does not know"):
        check_model_bytes(model.SerializeToString())


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00", b"\xff" * 20, b"\x3a\x05abc", b"\x3a\x80\x80\x80\x80\x10"])
def test_garbage_is_refused_cleanly(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected):
        check_model_bytes(data)
    path = tmp_path / "garbage.onnx"
    path.write_bytes(data)
    with pytest.raises(ArtifactRejected):
        check_model_file(str(path))
