"""Hostile ONNX models, built with onnx.helper, one per place a tensor or a node can hide in the protobuf.

Each builder returns serialized bytes. ``EXTERNAL_DATA`` models point a tensor at a file outside the model (the
agent must refuse them before onnxruntime sees them); ``CUSTOM_DOMAIN`` models use an operator from a domain that
would need a custom-op library. Shared by the guard's unit tests and the agent's reliability suite.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
#: An IR version every supported onnxruntime reads, so a refusal is about the hiding place, never the version.
IR_VERSION = 8
SECRET = "/etc/passwd"


def external(tensor: TensorProto, location: str = SECRET, *, entries: bool = True) -> TensorProto:
    """Turn a tensor into one whose data lives in a file at ``location``."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.data_location = TensorProto.EXTERNAL
    if entries:
        for key, value in (("location", location), ("offset", "0"), ("length", "16")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return tensor


def _floats(name: str, n: int = 4) -> TensorProto:
    return numpy_helper.from_array(np.arange(n, dtype=np.float32), name)


def _io() -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])


def _model(nodes: list[onnx.NodeProto], **graph: object) -> onnx.ModelProto:
    x, y = _io()
    extra = {k: v for k, v in graph.items() if k in ("initializer", "sparse_initializer")}
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], **extra), opset_imports=OPSET, ir_version=IR_VERSION)


def _add_w() -> onnx.NodeProto:
    return helper.make_node("Add", ["x", "w"], ["y"])


def ext_initializer() -> bytes:
    return _model([_add_w()], initializer=[external(_floats("w"))]).SerializeToString()


def ext_location_flag_only() -> bytes:
    return _model([_add_w()], initializer=[external(_floats("w"), entries=False)]).SerializeToString()


def ext_constant_value() -> bytes:
    const = helper.make_node("Constant", [], ["w"], value=external(_floats("c")))
    return _model([const, _add_w()]).SerializeToString()


def ext_sparse_value_values() -> bytes:
    sparse = helper.make_sparse_tensor(external(_floats("v")), numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"), [4])
    return _model([helper.make_node("Constant", [], ["w"], sparse_value=sparse), _add_w()]).SerializeToString()


def ext_sparse_value_indices() -> bytes:
    indices = external(numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"))
    sparse = helper.make_sparse_tensor(_floats("v"), indices, [4])
    return _model([helper.make_node("Constant", [], ["w"], sparse_value=sparse), _add_w()]).SerializeToString()


def ext_attribute_tensor_list() -> bytes:
    node = helper.make_node("Identity", ["x"], ["y"])
    node.attribute.append(helper.make_attribute("hidden", [external(_floats("t"))]))
    return _model([node]).SerializeToString()


def ext_sparse_initializer() -> bytes:
    sparse = helper.make_sparse_tensor(external(_floats("w")), numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"), [4])
    return _model([_add_w()], sparse_initializer=[sparse]).SerializeToString()


def ext_deep_subgraph() -> bytes:
    inner = helper.make_graph([helper.make_node("Identity", ["w"], ["z"])], "leaf", [], [], initializer=[external(_floats("w"))])
    for depth in range(3):
        node = helper.make_node("If", ["c"], [f"o{depth}"], then_branch=inner, else_branch=inner)
        inner = helper.make_graph([node], f"g{depth}", [], [])
    outer = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)
    return _model([outer]).SerializeToString()


def _local_function(nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    x, y = _io()
    fn = helper.make_function("local.fns", "F", ["x"], ["y"], nodes, OPSET)
    graph = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local.fns")], "g", [x], [y])
    return helper.make_model(
        graph, functions=[fn], opset_imports=[*OPSET, helper.make_opsetid("local.fns", 1)], ir_version=IR_VERSION
    )


def ext_in_function() -> bytes:
    const = helper.make_node("Constant", [], ["w"], value=external(_floats("c")))
    return _local_function([const, _add_w()]).SerializeToString()


def ext_training_initialization() -> bytes:
    model = _model([helper.make_node("Identity", ["x"], ["y"])])
    info = onnx.TrainingInfoProto()
    info.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[external(_floats("w"))]))
    model.training_info.append(info)
    return model.SerializeToString()


def ext_training_algorithm() -> bytes:
    model = _model([helper.make_node("Identity", ["x"], ["y"])])
    info = onnx.TrainingInfoProto()
    info.algorithm.CopyFrom(helper.make_graph([], "algo", [], [], initializer=[external(_floats("w"))]))
    model.training_info.append(info)
    return model.SerializeToString()


def custom_top_level() -> bytes:
    return _model([helper.make_node("Evil", ["x"], ["y"], domain="com.attacker")]).SerializeToString()


def custom_in_subgraph() -> bytes:
    branch = helper.make_graph([helper.make_node("Evil", ["x"], ["z"], domain="com.attacker")], "b", [], [])
    return _model([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)]).SerializeToString()


def custom_in_function() -> bytes:
    return _local_function([helper.make_node("Evil", ["x"], ["y"], domain="com.attacker")]).SerializeToString()


def subgraph_depth_bomb(depth: int = 40) -> bytes:
    inner = helper.make_graph([], "g0", [], [])
    for level in range(depth):
        node = helper.make_node("If", ["c"], ["o"], then_branch=inner, else_branch=inner)
        inner = helper.make_graph([node], f"g{level + 1}", [], [])
    return helper.make_model(inner, opset_imports=OPSET, ir_version=IR_VERSION).SerializeToString()


EXTERNAL_DATA: dict[str, Callable[[], bytes]] = {
    "initializer": ext_initializer,
    "data_location flag without entries": ext_location_flag_only,
    "Constant value": ext_constant_value,
    "Constant sparse_value values": ext_sparse_value_values,
    "Constant sparse_value indices": ext_sparse_value_indices,
    "attribute tensors list": ext_attribute_tensor_list,
    "sparse_initializer": ext_sparse_initializer,
    "initializer of a subgraph 4 levels deep": ext_deep_subgraph,
    "Constant inside a model-local function": ext_in_function,
    "training_info initialization": ext_training_initialization,
    "training_info algorithm": ext_training_algorithm,
}
CUSTOM_DOMAIN: dict[str, Callable[[], bytes]] = {
    "top level": custom_top_level,
    "inside a subgraph": custom_in_subgraph,
    "inside a model-local function": custom_in_function,
}


def same_model_without_external_data(builder_name: str) -> bytes:
    """The control for a hostile model: the same graph with its external tensors made inline again."""
    model = onnx.load_from_string(globals()[builder_name]())
    for tensor in _all_tensors(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            tensor.ClearField("external_data")
            tensor.data_location = TensorProto.DEFAULT
            n = int(np.prod(tensor.dims)) if tensor.dims else 4
            dtype = np.int64 if tensor.data_type == TensorProto.INT64 else np.float32
            tensor.raw_data = np.arange(n, dtype=dtype).tobytes()
    return model.SerializeToString()


def _all_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            yield from ([attr.t] if attr.HasField("t") else [])
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
                yield from _all_tensors(sub)


def point_external_data_at(data: bytes, location: str) -> bytes:
    """The same hostile model with every external-data location set to ``location``."""
    model = onnx.load_from_string(data)
    for tensor in _all_tensors(model.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return model.SerializeToString()


def local_function_model() -> bytes:
    """A legitimate model whose node calls a function the model defines itself (must be accepted)."""
    return _local_function([helper.make_node("Relu", ["x"], ["y"])]).SerializeToString()
