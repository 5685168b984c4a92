"""Runnable hostile ONNX models (float input ``x`` → ``y``), for what happens *after* the guard: whether the installed
onnxruntime and the worker's confinement still keep a model from reading files. Each has a control twin with its
data inline. The full corpus of hiding places the guard must refuse is ``tests/reliability/hostile_onnx.py``.
"""

from __future__ import annotations

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


def ext_constant_value() -> bytes:
    const = helper.make_node("Constant", [], ["w"], value=external(_floats("c")))
    return _model([const, _add_w()]).SerializeToString()


def ext_sparse_value_values() -> bytes:
    sparse = helper.make_sparse_tensor(external(_floats("v")), numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"), [4])
    return _model([helper.make_node("Constant", [], ["w"], sparse_value=sparse), _add_w()]).SerializeToString()


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
