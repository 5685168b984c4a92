"""Refuse ONNX files the agent must never load, without the onnx package (a Pi does not install it).

An ONNX model is an untrusted protobuf. Before onnxruntime sees it, the guard walks its wire format through the
ONNX descriptor (:mod:`edge_agent.runtimes.onnx_schema`, generated from the ``onnx`` package): every message reachable
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

The walk reads the file with ``os.pread`` in windows, depth first with one frame per nesting level: large tensors
are skipped by length, never read or copied; memory stays proportional to the nesting depth (bounded), however
wide the model; the numbers of messages and fields visited are bounded too (so is the guard's CPU time); no
memory map is held (an error leaves nothing open) and no Python recursion is involved. A file without a graph is
not a model and is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

from edge_agent.contract.errors import ArtifactRejected
from edge_agent.runtimes.onnx_schema import MESSAGES, ROOT

ALLOWED_DOMAINS: Final = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft"})
ALLOWED_DOMAIN_PREFIXES: Final = ("ai.onnx.", "com.microsoft.")
MAX_GRAPH_DEPTH: Final = 16
MAX_MESSAGE_DEPTH: Final = 100
MAX_MESSAGES: Final = 500_000
#: Protobuf fields visited in all; bounds the guard's CPU time (real models have far fewer: big tensors are one field).
MAX_FIELDS: Final = 2_000_000
#: Strings the guard reads (domains, op types, function names) longer than this are refused.
MAX_NAME_BYTES: Final = 4096
_WINDOW: Final = 64 << 10
_TENSOR: Final = "onnx.TensorProto"
_NODE: Final = "onnx.NodeProto"
_FUNCTION: Final = "onnx.FunctionProto"
_GRAPH: Final = "onnx.GraphProto"
_NAMES_READ: Final = frozenset({(_NODE, "domain"), (_NODE, "op_type"), (_FUNCTION, "domain"), (_FUNCTION, "name")})
_EXTERNAL = "the ONNX model uses external data files; only single-file models are accepted (re-export it as one file)"



class _Source:
    """Random access to the bytes being checked: a file descriptor (``pread`` in windows) or bytes in memory."""

    def __init__(self, *, data: bytes | None = None, fd: int = -1, size: int = 0) -> None:
        self._fd = fd
        self.size = len(data) if data is not None else size
        self._in_memory = data is not None
        self._start = 0
        self._window = data if data is not None else b""

    def window(self, pos: int) -> tuple[bytes, int]:
        """A buffer holding byte ``pos`` and the file offset of its first byte."""
        if self._in_memory or self._start <= pos < self._start + len(self._window):
            return self._window, self._start
        self._start = pos
        self._window = os.pread(self._fd, _WINDOW, pos)
        if not self._window:
            raise ArtifactRejected("the ONNX file is not a valid protobuf (truncated)")
        return self._window, self._start

    def read(self, pos: int, n: int) -> bytes:
        if self._in_memory:
            return self._window[pos : pos + n]
        return os.pread(self._fd, n, pos)


@dataclass
class _Findings:
    messages: int = 0
    fields: int = 0
    has_graph: bool = False
    #: (domain, op_type) of every node outside the standard domains.
    custom_nodes: set[tuple[str, str]] = field(default_factory=set)
    #: (domain, name) of every model-local function.
    functions: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class _Frame:
    """A message being walked: its type, where its next field starts, where it ends, and what it said."""

    kind: str
    pos: int
    end: int
    graph_depth: int
    depth: int
    strings: dict[int, str] = field(default_factory=dict)


def _varint(src: _Source, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    buf, base = src.window(pos)
    while True:
        if pos >= end or shift > 63:
            raise ArtifactRejected("the ONNX file is not a valid protobuf (truncated varint)")
        i = pos - base
        if i >= len(buf):
            buf, base = src.window(pos)
            i = 0
        b = buf[i]
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


def _next_field(src: _Source, frame: _Frame, found: _Findings) -> _Frame | None:
    """Check the frame's next field; returns the child message to walk next, if the field is one."""
    found.fields += 1
    if found.fields > MAX_FIELDS:
        raise ArtifactRejected(f"the ONNX model has more than {MAX_FIELDS} protobuf fields")
    key, pos = _varint(src, frame.pos, frame.end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise ArtifactRejected("the ONNX file is not a valid protobuf (field number 0)")
    spec = MESSAGES[frame.kind].get(number)
    child: _Frame | None = None
    if wire == 0:
        value, pos = _varint(src, pos, frame.end)
        if frame.kind == _TENSOR and spec is not None and spec[0] == "data_location" and value != 0:
            raise ArtifactRejected(_EXTERNAL)  # anything but DEFAULT (a reader may truncate the number to 1)
    elif wire == 1:
        pos += 8
    elif wire == 5:
        pos += 4
    elif wire == 2:
        length, pos = _varint(src, pos, frame.end)
        if pos + length > frame.end:
            raise ArtifactRejected("the ONNX file is not a valid protobuf (field past the end of its message)")
        if spec is None:
            raise ArtifactRejected(
                f"the ONNX model has a field ({frame.kind.removeprefix('onnx.')} #{number}) this agent does not know; "
                "export with the ONNX version the agent supports or update the agent"
            )
        name, _, kind = spec
        if frame.kind == _TENSOR and name == "external_data":
            raise ArtifactRejected(_EXTERNAL)
        if kind is not None:
            child = _Frame(kind, pos, pos + length, frame.graph_depth + (kind == _GRAPH), frame.depth + 1)
            found.has_graph |= frame.kind == ROOT and name == "graph"
        elif (frame.kind, name) in _NAMES_READ:
            frame.strings[number] = _text(src, pos, length, f"{frame.kind.removeprefix('onnx.')}.{name}")
        pos += length
    else:
        raise ArtifactRejected(f"the ONNX file is not a valid protobuf (wire type {wire})")
    if pos > frame.end:
        raise ArtifactRejected("the ONNX file is not a valid protobuf (truncated field)")
    frame.pos = pos
    return child


def _finish(frame: _Frame, found: _Findings) -> None:
    """Remember custom-domain nodes and the functions the model defines (matched after the walk)."""
    schema = MESSAGES[frame.kind]
    names = {schema[n][0]: text for n, text in frame.strings.items()}
    if frame.kind == _NODE and not _allowed(names.get("domain", "")):
        found.custom_nodes.add((names.get("domain", ""), names.get("op_type", "")))
    elif frame.kind == _FUNCTION:
        found.functions.add((names.get("domain", ""), names.get("name", "")))


def _walk(src: _Source) -> None:
    """Depth first, one frame per nesting level: memory stays proportional to the depth, whatever the width."""
    if src.size == 0:
        raise ArtifactRejected("the ONNX file is empty")
    found = _Findings()
    stack = [_Frame(ROOT, 0, src.size, 0, 0)]
    while stack:
        frame = stack[-1]
        if frame.pos >= frame.end:
            _finish(stack.pop(), found)
            continue
        child = _next_field(src, frame, found)
        if child is None:
            continue
        if child.graph_depth > MAX_GRAPH_DEPTH:
            raise ArtifactRejected(f"the ONNX model nests subgraphs deeper than {MAX_GRAPH_DEPTH} levels")
        if child.depth > MAX_MESSAGE_DEPTH:
            raise ArtifactRejected(f"the ONNX model nests messages deeper than {MAX_MESSAGE_DEPTH} levels")
        found.messages += 1
        if found.messages > MAX_MESSAGES:
            raise ArtifactRejected(f"the ONNX model has more than {MAX_MESSAGES} protobuf messages")
        stack.append(child)
    if not found.has_graph:
        raise ArtifactRejected("the file is not an ONNX model (it has no graph)")
    for domain, op_type in sorted(found.custom_nodes):
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
