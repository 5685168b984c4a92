"""Refuse ONNX files the agent must never load, without the onnx package (a Pi does not install it).

An ONNX model is an untrusted protobuf. Before onnxruntime sees it, the guard walks its wire format through the
ONNX descriptor (:mod:`edge_agent.onnx_schema`, generated from the ``onnx`` package): every message reachable
from ``ModelProto`` is visited by its type, wherever it sits (graph initializers, Constant ``value`` and
``sparse_value``, attribute tensor lists, subgraphs, model-local functions, training-info graphs, ...). It
refuses:

* any ``TensorProto`` with external data (``external_data`` entries or ``data_location = EXTERNAL``): a model
  could name ``../../etc/passwd`` or any path on the device; only single-file models are accepted;
* any ``NodeProto`` whose domain is neither ONNX's nor ONNX Runtime's own, unless it calls a function the model
  itself defines (``ModelProto.functions``); a custom domain means a custom-op library;
* graphs nested deeper than ``MAX_GRAPH_DEPTH`` and messages nested deeper than ``MAX_MESSAGE_DEPTH``
  (recursion bombs), more than ``MAX_MESSAGES`` messages in all;
* anything that is not well-formed protobuf of that schema, including length-delimited fields the schema does
  not know (fail closed: a newer ONNX field could carry a tensor this agent cannot inspect).

The walk reads the file with ``os.pread`` and an explicit stack: large tensors are skipped by length, never read
or copied, no memory map is held (so an error leaves nothing open), and no Python recursion is involved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

from edge_agent.errors import ArtifactRejected
from edge_agent.onnx_schema import MESSAGES, ROOT

ALLOWED_DOMAINS: Final = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft"})
ALLOWED_DOMAIN_PREFIXES: Final = ("ai.onnx.", "com.microsoft.")
MAX_GRAPH_DEPTH: Final = 16
MAX_MESSAGE_DEPTH: Final = 100
MAX_MESSAGES: Final = 2_000_000
#: Strings the guard reads (domains, op types, function names) longer than this are refused.
MAX_NAME_BYTES: Final = 4096
_WINDOW: Final = 64 << 10
_TENSOR: Final = "onnx.TensorProto"
_NODE: Final = "onnx.NodeProto"
_FUNCTION: Final = "onnx.FunctionProto"
_GRAPH: Final = "onnx.GraphProto"
_NAMES_READ: Final = frozenset({(_NODE, "domain"), (_NODE, "op_type"), (_FUNCTION, "domain"), (_FUNCTION, "name")})
_EXTERNAL = "the ONNX model uses external data files; only single-file models are accepted (re-export it as one file)"

# Back-compatible name for callers and tests that speak of subgraph depth.
MAX_DEPTH: Final = MAX_GRAPH_DEPTH


class _Source:
    """Random access to the bytes being checked: a file descriptor (``pread`` in windows) or bytes in memory."""

    def __init__(self, *, data: bytes | None = None, fd: int = -1, size: int = 0) -> None:
        self._data = data
        self._fd = fd
        self.size = len(data) if data is not None else size
        self._start = 0
        self._window = b""

    def byte(self, pos: int) -> int:
        if self._data is not None:
            return self._data[pos]
        if not self._start <= pos < self._start + len(self._window):
            self._start = pos
            self._window = os.pread(self._fd, _WINDOW, pos)
            if not self._window:
                raise ArtifactRejected("the ONNX file is not a valid protobuf (truncated)")
        return self._window[pos - self._start]

    def read(self, pos: int, n: int) -> bytes:
        if self._data is not None:
            return self._data[pos : pos + n]
        return os.pread(self._fd, n, pos)


@dataclass
class _Findings:
    messages: int = 0
    #: (domain, op_type) of every node outside the standard domains.
    custom_nodes: list[tuple[str, str]] = field(default_factory=list)
    #: (domain, name) of every model-local function.
    functions: set[tuple[str, str]] = field(default_factory=set)


def _varint(src: _Source, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ArtifactRejected("the ONNX file is not a valid protobuf (truncated varint)")
        b = src.byte(pos)
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _text(src: _Source, pos: int, length: int, what: str) -> str:
    if length > MAX_NAME_BYTES:
        raise ArtifactRejected(f"the ONNX model has a {what} of {length} bytes (at most {MAX_NAME_BYTES})")
    return src.read(pos, length).decode("utf-8", errors="replace")


def _allowed(domain: str) -> bool:
    return domain in ALLOWED_DOMAINS or domain.startswith(ALLOWED_DOMAIN_PREFIXES)


def _check_message(
    src: _Source, kind: str, start: int, end: int, graph_depth: int, depth: int, found: _Findings
) -> list[tuple[str, int, int, int, int]]:
    """Check one message's own fields; returns its child messages (kind, start, end, graph depth, depth)."""
    schema = MESSAGES[kind]
    children: list[tuple[str, int, int, int, int]] = []
    strings: dict[int, str] = {}
    pos = start
    while pos < end:
        key, pos = _varint(src, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ArtifactRejected("the ONNX file is not a valid protobuf (field number 0)")
        spec = schema.get(number)
        if wire == 0:
            value, pos = _varint(src, pos, end)
            if kind == _TENSOR and spec is not None and spec[0] == "data_location" and value == 1:
                raise ArtifactRejected(_EXTERNAL)
            continue
        if wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(src, pos, end)
            if pos + length > end:
                raise ArtifactRejected("the ONNX file is not a valid protobuf (field past the end of its message)")
            if spec is None:
                raise ArtifactRejected(
                    f"the ONNX model has a field ({kind.removeprefix('onnx.')} #{number}) this agent does not know; "
                    "export with the ONNX version the agent supports or update the agent"
                )
            name, _, child = spec
            if kind == _TENSOR and name == "external_data":
                raise ArtifactRejected(_EXTERNAL)
            if child is not None:
                nested_graph = graph_depth + (child == _GRAPH)
                children.append((child, pos, pos + length, nested_graph, depth + 1))
            elif (kind, name) in _NAMES_READ:
                strings[number] = _text(src, pos, length, f"{kind.removeprefix('onnx.')}.{name}")
            pos += length
        else:
            raise ArtifactRejected(f"the ONNX file is not a valid protobuf (wire type {wire})")
    if pos != end:
        raise ArtifactRejected("the ONNX file is not a valid protobuf (truncated field)")
    _note_names(kind, {schema[n][0]: text for n, text in strings.items()}, found)
    return children


def _note_names(kind: str, names: dict[str, str], found: _Findings) -> None:
    """Remember custom-domain nodes and the functions the model defines (matched after the walk)."""
    if kind == _NODE and not _allowed(names.get("domain", "")):
        found.custom_nodes.append((names.get("domain", ""), names.get("op_type", "")))
    elif kind == _FUNCTION:
        found.functions.add((names.get("domain", ""), names.get("name", "")))


def _walk(src: _Source) -> None:
    if src.size == 0:
        raise ArtifactRejected("the ONNX file is empty")
    found = _Findings()
    stack: list[tuple[str, int, int, int, int]] = [(ROOT, 0, src.size, 0, 0)]
    while stack:
        kind, start, end, graph_depth, depth = stack.pop()
        if graph_depth > MAX_GRAPH_DEPTH:
            raise ArtifactRejected(f"the ONNX model nests subgraphs deeper than {MAX_GRAPH_DEPTH} levels")
        if depth > MAX_MESSAGE_DEPTH:
            raise ArtifactRejected(f"the ONNX model nests messages deeper than {MAX_MESSAGE_DEPTH} levels")
        found.messages += 1
        if found.messages > MAX_MESSAGES:
            raise ArtifactRejected(f"the ONNX model has more than {MAX_MESSAGES} protobuf messages")
        stack.extend(_check_message(src, kind, start, end, graph_depth, depth, found))
    for domain, op_type in found.custom_nodes:
        if (domain, op_type) not in found.functions:
            raise ArtifactRejected(
                f"the ONNX model uses operator {op_type[:60]!r} of domain {domain[:60]!r}; custom operators are not loaded"
            )


def check_model_bytes(data: bytes) -> None:
    """Raises ArtifactRejected if the model is not a safe single-file ONNX model."""
    _walk(_Source(data=data))


def check_model_file(path: str) -> None:
    """Check a model file in place (read in windows: large initializers are skipped, never read or copied)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    try:
        _walk(_Source(fd=fd, size=os.fstat(fd).st_size))
    finally:
        os.close(fd)
