"""Hostile ONNX models, built with onnx.helper: every place a tensor with external data or a custom-domain node
can hide, subgraph depth bombs and huge declared dims. The agent must refuse each at push (INVALID_ARGUMENT).

    python tests/reliability/hostile_onnx.py [DIR]    # writes the corpus (default tests/data/malicious_onnx/)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, TensorProto, helper, numpy_helper

#: What an attacker points external data at: a file of the device, and a file beside the artifact.
SECRET_PATHS = ("/etc/passwd", "../../../../../../etc/passwd", "model.onnx.data")
FUNCTION_DOMAIN = "ai.onnx.local"  # under an allowed prefix, so only the function's body can give it away
EVIL_DOMAIN = "evil.ops"


def external_tensor(name: str, location: str = "/etc/passwd", dims: tuple[int, ...] = (16,)) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(int(np.prod(dims))))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def plain_tensor(name: str, dims: tuple[int, ...] = (16,)) -> TensorProto:
    return numpy_helper.from_array(np.zeros(dims, dtype=np.uint8), name)


def sparse(values: TensorProto, indices: TensorProto, dims: tuple[int, ...] = (64,)) -> onnx.SparseTensorProto:
    return helper.make_sparse_tensor(values, indices, list(dims))


def _io() -> tuple[list, list]:
    return (
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )


def _graph(nodes: list, initializers: list | None = None, name: str = "g", sparse_inits: list | None = None) -> GraphProto:
    inputs, outputs = _io()
    graph = helper.make_graph(
        [*nodes, helper.make_node("Identity", ["input"], ["output"])], name, inputs, outputs, initializers or []
    )
    if sparse_inits:
        graph.sparse_initializer.extend(sparse_inits)
    return graph


def _model(graph: GraphProto, functions: list[FunctionProto] | None = None, extra_opsets: tuple = ()) -> ModelProto:
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in extra_opsets)]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions or [])
    model.ir_version = 8
    return model


def _branch(nodes: list, out: str, initializers: list | None = None, name: str = "branch") -> GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.UINT8, None)], initializers or [])


def _if_node(then_graph: GraphProto, out: str = "if_out") -> list:
    cond = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "c"))
    result = then_graph.output[0].name
    plain = _branch([helper.make_node("Constant", [], [result], value=plain_tensor("e"))], result, name="else")
    return [cond, helper.make_node("If", ["cond"], [out], then_branch=then_graph, else_branch=plain)]


def _constant_external(out: str = "leak") -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], value=external_tensor("leak_value"))


def _nested_if(inner: GraphProto, depth: int, out: str) -> GraphProto:
    graph = inner
    for level in range(depth):
        graph = _branch(_if_node(graph, out=f"{out}_{level}"), f"{out}_{level}", name=f"level{level}")
    return graph


def _loop_node(body_nodes: list, body_inits: list | None = None) -> list:
    body = helper.make_graph(
        [*body_nodes, helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "loop_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("leak", TensorProto.UINT8, None),
        ],
        body_inits or [],
    )
    trip = helper.make_node("Constant", [], ["trip"], value=numpy_helper.from_array(np.array(1, dtype=np.int64), "t"))
    cond = helper.make_node("Constant", [], ["cond0"], value=numpy_helper.from_array(np.array(True), "c0"))
    return [trip, cond, helper.make_node("Loop", ["trip", "cond0"], ["loop_out"], body=body)]


def _function(nodes: list, name: str = "Leak") -> FunctionProto:
    return helper.make_function(
        FUNCTION_DOMAIN, name, [], ["out"], nodes, opset_imports=[helper.make_opsetid("", 17)], attributes=[]
    )


def _call_function(name: str = "Leak") -> onnx.NodeProto:
    return helper.make_node(name, [], ["fn_out"], domain=FUNCTION_DOMAIN)


def _training(init_graph: GraphProto | None = None, algorithm: GraphProto | None = None) -> onnx.TrainingInfoProto:
    info = onnx.TrainingInfoProto()
    if init_graph is not None:
        info.initialization.CopyFrom(init_graph)
    if algorithm is not None:
        info.algorithm.CopyFrom(algorithm)
    return info


# ----- the corpus --------------------------------------------------------------------------------------------
def m_initializer_external(location: str = "/etc/passwd") -> ModelProto:
    return _model(
        _graph([helper.make_node("Cast", ["leak_init"], ["x"], to=TensorProto.FLOAT)], [external_tensor("leak_init", location)])
    )


def m_initializer_location_only() -> ModelProto:
    tensor = plain_tensor("leak_init")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return _model(_graph([helper.make_node("Cast", ["leak_init"], ["x"], to=TensorProto.FLOAT)], [tensor]))


def m_constant_value_external() -> ModelProto:
    return _model(_graph([_constant_external()]))


def m_constant_sparse_values_external() -> ModelProto:
    indices = numpy_helper.from_array(np.arange(16, dtype=np.int64), "idx")
    node = helper.make_node("Constant", [], ["leak"], sparse_value=sparse(external_tensor("vals"), indices))
    return _model(_graph([node]))


def m_constant_sparse_indices_external() -> ModelProto:
    values = plain_tensor("vals")
    indices = external_tensor("idx")
    indices.data_type = TensorProto.INT64
    node = helper.make_node("Constant", [], ["leak"], sparse_value=sparse(values, indices))
    return _model(_graph([node]))


def m_attribute_tensors_list_external() -> ModelProto:
    node = helper.make_node("Identity", ["input"], ["x"])
    attr = AttributeProto(name="payload", type=AttributeProto.TENSORS)
    attr.tensors.extend([plain_tensor("ok"), external_tensor("leak_in_list")])
    node.attribute.append(attr)
    return _model(_graph([node]))


def m_attribute_sparse_tensors_list_external() -> ModelProto:
    node = helper.make_node("Identity", ["input"], ["x"])
    attr = AttributeProto(name="payload", type=AttributeProto.SPARSE_TENSORS)
    indices = numpy_helper.from_array(np.arange(16, dtype=np.int64), "idx")
    attr.sparse_tensors.append(sparse(external_tensor("vals"), indices))
    node.attribute.append(attr)
    return _model(_graph([node]))


def m_sparse_initializer_external() -> ModelProto:
    indices = numpy_helper.from_array(np.arange(16, dtype=np.int64), "idx")
    values = external_tensor("sp_init")
    return _model(_graph([], sparse_inits=[sparse(values, indices)]))


def m_if_subgraph_external_at_depth() -> ModelProto:
    inner = _branch([helper.make_node("Identity", ["deep_leak"], ["deep_out"])], "deep_out", [external_tensor("deep_leak")])
    return _model(_graph(_if_node(_nested_if(inner, 3, "lvl"))))


def m_if_constant_external() -> ModelProto:
    return _model(_graph(_if_node(_branch([_constant_external("leak_b")], "leak_b"))))


def m_loop_body_external() -> ModelProto:
    return _model(_graph(_loop_node([helper.make_node("Identity", ["body_leak"], ["leak"])], [external_tensor("body_leak")])))


def m_loop_body_constant_external() -> ModelProto:
    return _model(_graph(_loop_node([_constant_external("leak")])))


def m_function_constant_external() -> ModelProto:
    fn = _function([helper.make_node("Constant", [], ["out"], value=external_tensor("fn_leak"))])
    return _model(_graph([_call_function()]), [fn], (FUNCTION_DOMAIN,))


def m_function_sparse_constant_external() -> ModelProto:
    indices = numpy_helper.from_array(np.arange(16, dtype=np.int64), "idx")
    fn = _function([helper.make_node("Constant", [], ["out"], sparse_value=sparse(external_tensor("fn_vals"), indices))])
    return _model(_graph([_call_function()]), [fn], (FUNCTION_DOMAIN,))


def m_function_if_subgraph_external() -> ModelProto:
    then = _branch([helper.make_node("Identity", ["fn_deep"], ["fn_deep_out"])], "fn_deep_out", [external_tensor("fn_deep")])
    fn = _function([*_if_node(then, out="out")])
    return _model(_graph([_call_function()]), [fn], (FUNCTION_DOMAIN,))


def m_function_uncalled_external() -> ModelProto:
    fn = _function([helper.make_node("Constant", [], ["out"], value=external_tensor("unused"))], name="Unused")
    return _model(_graph([]), [fn], (FUNCTION_DOMAIN,))


def m_training_initialization_external() -> ModelProto:
    model = _model(_graph([]))
    init = helper.make_graph([], "init", [], [], [external_tensor("train_leak")])
    model.training_info.append(_training(init_graph=init))
    return model


def m_training_algorithm_external() -> ModelProto:
    model = _model(_graph([]))
    algo = helper.make_graph(
        [_constant_external("algo_leak")], "algo", [], [helper.make_tensor_value_info("algo_leak", TensorProto.UINT8, None)]
    )
    model.training_info.append(_training(algorithm=algo))
    return model


def m_custom_domain_top() -> ModelProto:
    return _model(_graph([helper.make_node("ReadFile", ["input"], ["x"], domain=EVIL_DOMAIN)]), extra_opsets=(EVIL_DOMAIN,))


def m_custom_domain_in_subgraph() -> ModelProto:
    inner = _branch([helper.make_node("ReadFile", [], ["evil_out"], domain=EVIL_DOMAIN)], "evil_out")
    return _model(_graph(_if_node(_nested_if(inner, 2, "e"))), extra_opsets=(EVIL_DOMAIN,))


def m_custom_domain_in_function() -> ModelProto:
    fn = _function([helper.make_node("ReadFile", [], ["out"], domain=EVIL_DOMAIN)])
    fn.opset_import.append(helper.make_opsetid(EVIL_DOMAIN, 1))
    return _model(_graph([_call_function()]), [fn], (FUNCTION_DOMAIN, EVIL_DOMAIN))


def m_custom_domain_in_training() -> ModelProto:
    model = _model(_graph([]), extra_opsets=(EVIL_DOMAIN,))
    algo = helper.make_graph(
        [helper.make_node("ReadFile", [], ["t"], domain=EVIL_DOMAIN)],
        "algo",
        [],
        [helper.make_tensor_value_info("t", TensorProto.UINT8, None)],
    )
    model.training_info.append(_training(algorithm=algo))
    return model


#: Subgraph levels of the depth bombs built with onnx.helper (protobuf's own parser stops near 100 message levels,
#: three per If); the wire-level bomb below goes far deeper.
BOMB_LEVELS = 24


def m_depth_bomb() -> ModelProto:
    inner = _branch([helper.make_node("Constant", [], ["bottom"], value=plain_tensor("b"))], "bottom")
    return _model(_graph(_if_node(_nested_if(inner, BOMB_LEVELS, "bomb"))))


def m_function_depth_bomb() -> ModelProto:
    inner = _branch([helper.make_node("Constant", [], ["bottom"], value=plain_tensor("b"))], "bottom")
    fn = _function(_if_node(_nested_if(inner, BOMB_LEVELS, "fbomb"), out="out"))
    return _model(_graph([_call_function()]), [fn], (FUNCTION_DOMAIN,))


def m_huge_initializer_dims() -> ModelProto:
    tensor = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[2**31, 2**31], raw_data=b"\x00" * 16)
    return _model(_graph([helper.make_node("Shape", ["huge"], ["x"])], [tensor]))


CORPUS: dict[str, Callable[[], ModelProto]] = {
    "initializer_external_abs": m_initializer_external,
    "initializer_external_traversal": lambda: m_initializer_external(SECRET_PATHS[1]),
    "initializer_external_beside": lambda: m_initializer_external(SECRET_PATHS[2]),
    "initializer_data_location_only": m_initializer_location_only,
    "constant_value_external": m_constant_value_external,
    "constant_sparse_values_external": m_constant_sparse_values_external,
    "constant_sparse_indices_external": m_constant_sparse_indices_external,
    "attribute_tensors_list_external": m_attribute_tensors_list_external,
    "attribute_sparse_tensors_list_external": m_attribute_sparse_tensors_list_external,
    "sparse_initializer_external": m_sparse_initializer_external,
    "if_subgraph_external_depth4": m_if_subgraph_external_at_depth,
    "if_constant_external": m_if_constant_external,
    "loop_body_initializer_external": m_loop_body_external,
    "loop_body_constant_external": m_loop_body_constant_external,
    "function_constant_external": m_function_constant_external,
    "function_sparse_constant_external": m_function_sparse_constant_external,
    "function_if_subgraph_external": m_function_if_subgraph_external,
    "function_uncalled_external": m_function_uncalled_external,
    "training_initialization_external": m_training_initialization_external,
    "training_algorithm_external": m_training_algorithm_external,
    "custom_domain_top": m_custom_domain_top,
    "custom_domain_in_subgraph": m_custom_domain_in_subgraph,
    "custom_domain_in_function": m_custom_domain_in_function,
    "custom_domain_in_training": m_custom_domain_in_training,
    "depth_bomb": m_depth_bomb,
    "function_depth_bomb": m_function_depth_bomb,
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def wire_depth_bomb(levels: int = 2000) -> bytes:
    """A ModelProto nested ``levels`` subgraphs deep, written on the wire (no protobuf library builds it)."""
    graph = _field(2, b"bottom")  # GraphProto.name
    for _ in range(levels):
        attribute = _field(1, b"then_branch") + _varint(20 << 3) + _varint(5) + _field(6, graph)  # name, type GRAPH, g
        node = _field(4, b"If") + _field(5, attribute)  # op_type, attribute
        graph = _field(1, node)  # GraphProto.node
    opset = _field(8, _varint(2 << 3) + _varint(17))  # ModelProto.opset_import {version: 17}
    return _varint(1 << 3) + _varint(8) + opset + _field(7, graph)  # ir_version 8, graph


def hostile_models() -> dict[str, bytes]:
    """Every model the agent must refuse at push."""
    return {**corpus_bytes(), "wire_depth_bomb_2000": wire_depth_bomb()}


def huge_input_dims_model() -> bytes:
    """A model whose input declares [2^31, 2^31]: refused at push, or refused cleanly when benchmarked."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "huge_input",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2**31, 2**31])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [2**31, 2**31])],
    )
    return _model(graph).SerializeToString()


def refused_at_push_or_benchmark() -> dict[str, bytes]:
    """Huge declared dims: refused at push, or refused cleanly (never loaded, never a crash) when benchmarked."""
    return {"huge_input_dims": huge_input_dims_model(), "huge_initializer_dims": m_huge_initializer_dims().SerializeToString()}


def _one_input(dims: list) -> bytes:
    """A well-formed model (the agent takes it at push) whose one input declares ``dims``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "one_input",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
    )
    return _model(graph).SerializeToString()


def host_refused_models() -> dict[str, tuple[bytes, int, str]]:
    """Well-formed models whose input ``edge-agent bench FILE`` cannot feed: each is refused on the host, before
    anything is sent, in one line (exit code, words the line names). The control characters in a dimension's name
    must not reach the terminal (a second line, an escape sequence)."""
    return {
        "host_scalar_input": (_one_input([]), 1, "is a scalar"),
        "host_zero_batch": (_one_input([0, 4]), 1, "fixes dimension 0 to 0"),
        "host_huge_fixed_dim": (_one_input([1, 2**40]), 1, f"fixes dimension 1 to {2**40}"),
        "host_control_chars_in_dim_name": (_one_input([1, "h\n\x1b[31mred"]), 2, "dynamic dimensions (h??[31mred)"),
    }


def corpus_bytes() -> dict[str, bytes]:
    return {name: build().SerializeToString() for name, build in CORPUS.items()}


def write_corpus(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    host = {name: data for name, (data, _, _) in host_refused_models().items()}
    for name, data in {**hostile_models(), **refused_at_push_or_benchmark(), **host}.items():
        path = folder / f"{name}.onnx"
        path.write_bytes(data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "data" / "malicious_onnx"
    for written in write_corpus(target):
        print(written)
