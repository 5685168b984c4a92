"""One way to open an ONNX Runtime CPU session, shared by the agent's worker and the toolchain's evaluation: the
same thread settings, graph-optimisation levels and input dtype handling on both sides of the wire.

``onnxruntime`` is imported when a session is opened, not with this module (the worker imports only what it runs).
"""

from __future__ import annotations

from typing import Any

#: Graph-optimisation levels by name. ``disable`` runs a QDQ model's QuantizeLinear / DequantizeLinear as written
#: (the model's semantics); ``all`` lets ONNX Runtime fuse them into this CPU's INT8 kernels.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

#: ONNX tensor types of model inputs the project produces, as numpy dtype names.
INPUT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def open_session(model: bytes | str, *, threads: int = 0, optimization: str = "all") -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider: ``threads`` intra-op threads (0: ONNX Runtime's
    default), one inter-op thread, warnings and errors only. ``model`` is the file's bytes or its path."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"unknown graph optimisation {optimization!r}; one of {', '.join(OPTIMIZATION_LEVELS)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = levels[optimization]
    # Parsed as ONNX, whatever the bytes look like: ONNX Runtime would otherwise load a file with "ORTM" at bytes
    # 4..8 as its own flatbuffer format, which the ONNX guard (a protobuf walk) never inspected.
    options.add_session_config_entry("session.load_model_format", "ONNX")
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def input_spec(session: Any) -> tuple[str, list[Any], str]:
    """The first input's name, shape (symbolic dimensions as strings) and numpy dtype name."""
    first = session.get_inputs()[0]
    return first.name, list(first.shape), INPUT_DTYPES.get(first.type, "float32")
