"""Refuse ONNX files the agent must never load, without the onnx package (a Pi does not install it).

An ONNX model is an untrusted protobuf. Before onnxruntime sees it we walk its wire format and refuse:

* any tensor with external data (``external_data`` / ``data_location = EXTERNAL``): a model could name
  ``../../etc/passwd`` or any path on the device; only single-file models are accepted;
* nodes from domains other than ONNX's and ONNX Runtime's own (a custom domain means a custom-op library;
  opset imports alone are harmless: exporters list many domains they never use);
* graphs nested deeper than ``MAX_DEPTH`` (subgraph bombs).

Field numbers are those of onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

from edge_agent.errors import ArtifactRejected

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
ALLOWED_DOMAIN_PREFIXES = ("ai.onnx.", "com.microsoft.")
MAX_DEPTH = 16

# (message, field number) -> child message kind, for the fields that can hold tensors, graphs or domains.
_CHILDREN = {
    ("model", 7): "graph",
    ("graph", 1): "node",
    ("graph", 5): "tensor",
    ("graph", 15): "sparse",
    ("node", 5): "attribute",
    ("attribute", 5): "tensor",
    ("attribute", 6): "graph",
    ("attribute", 10): "tensor",
    ("attribute", 11): "graph",
    ("sparse", 1): "tensor",
    ("sparse", 2): "tensor",
}


def _allowed(domain: str) -> bool:
    return domain in ALLOWED_DOMAINS or domain.startswith(ALLOWED_DOMAIN_PREFIXES)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ArtifactRejected("the ONNX file is not a valid protobuf (truncated varint)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ArtifactRejected("the ONNX file is not a valid protobuf (field past the end)")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ArtifactRejected(f"the ONNX file is not a valid protobuf (wire type {wire})")
    if pos != len(buf):
        raise ArtifactRejected("the ONNX file is not a valid protobuf (truncated field)")


def _walk(buf: memoryview, kind: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ArtifactRejected(f"the ONNX model nests subgraphs deeper than {MAX_DEPTH} levels")
    for number, wire, value in _fields(buf):
        if kind == "tensor" and number == 13 and wire == 2:
            raise ArtifactRejected("the ONNX model uses external data files; only single-file models are accepted")
        if kind == "tensor" and number == 14 and wire == 0 and value == 1:
            raise ArtifactRejected("the ONNX model uses external data files; only single-file models are accepted")
        if kind == "node" and number == 7 and wire == 2:
            domain = bytes(value).decode("utf-8", errors="replace")
            if not _allowed(domain):
                raise ArtifactRejected(f"the ONNX model uses operator domain {domain[:60]!r}; custom operators are not loaded")
        child = _CHILDREN.get((kind, number))
        if child is not None and wire == 2:
            _walk(value, child, depth + (child == "graph"))  # type: ignore[arg-type]


def check_model_bytes(data: bytes) -> None:
    """Raises ArtifactRejected if the model is not a safe single-file ONNX model."""
    if not data:
        raise ArtifactRejected("the ONNX file is empty")
    _walk(memoryview(data), "model", 0)


def check_model_file(path: str) -> None:
    """Check a model file in place (memory-mapped: large initializers are skipped, never copied)."""
    with open(path, "rb") as fh:  # noqa: PTH123 - the worker keeps imports minimal
        if os.fstat(fh.fileno()).st_size == 0:
            raise ArtifactRejected("the ONNX file is empty")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                _walk(view, "model", 0)
            finally:
                view.release()
