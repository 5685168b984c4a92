"""A model file the user already has (``.onnx``, ``.pte``, ``.tflite``), benchmarked as it is, as ``onnxruntime_perf_test``,
``benchmark_app`` or TFLite's ``benchmark_model`` take one: no metadata needed, the input comes from the file.

With only the ``agent`` extra (no torch, no ``onnx`` package, no ExecuTorch runtime):

* ONNX: the file first goes through the device's own guard (:mod:`edge_agent.runtimes.onnx_guard`: external data, custom
  operators, bombs and malformed protobuf are refused here too, before anything is sent), then the top-level
  graph's wire format is read through the same schema: its inputs (initializers excluded), their element type
  and dimensions (a size, a name, or unknown), its operators and its initializers' types (for the precision).
* ``.pte``: the ExecuTorch program's ``forward`` signature, read from its FlatBuffer
  (:func:`edge_agent.runtimes.executorch_program.program_input`).
* ``.tflite``: content-checked, then opened by ai-edge-litert's interpreter (its FlatBuffer verifier refuses a
  malformed file with an exception); any batch is fed (a resized interpreter or batch-1 slices).

:func:`stage_model_file` then writes the artifact folder the device needs, in a folder of the caller's (a
temporary one): ``manifest.json`` (the schema the store parses, with a ``source`` record saying the file is the
user's and where its precision and input shape came from) beside a link to the file, pushed like any artifact.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.contract.errors import ArtifactRejected
from edge_agent.contract.formats import MODEL_FORMATS
from edge_agent.contract.manifest import INPUT_DTYPES, MANIFEST_SCHEMA_VERSION, PRECISIONS, sha256_file, write_manifest
from edge_agent.runtimes import litert, onnx_guard
from edge_agent.runtimes.executorch_program import ExecutorchLoadError, program_input

#: The model files taken as they are, by suffix → artifact format.
SUFFIXES = {".onnx": "onnx", ".pte": "executorch", ".tflite": "litert"}
#: A dimension: a size, the name the file gives a dynamic one, or None (dynamic, unnamed).
Dim = int | str | None
#: Sizes ``--input-shape`` and a file may give (the store's bound on a manifest's input.shape).
MAX_DIM = 1 << 20
MAX_RANK = 8

#: ONNX ``TensorProto.DataType`` numbers → numpy names (the types a model input may have).
ONNX_TYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string", 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}
_FLOAT, _FLOAT16 = 1, 10
#: Integer weight types of a quantized model (uint8, int8, uint4, int4).
_INTEGER_WEIGHTS = frozenset({2, 3, 21, 22})
#: Operators only a quantized graph has (besides any QLinear* and *Integer operator).
_QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QGemm", "QAttention"})


class ModelFileError(ValueError):
    """The file is not a model this command can benchmark (exit 1); the message names the file and why."""


class InputShapeError(ValueError):
    """The input's shape needs ``--input-shape``, or the one given does not fit (a usage mistake, exit 2)."""


@dataclass(frozen=True)
class ModelInput:
    name: str
    #: One entry per dimension; None when the file does not declare the input's rank.
    shape: list[Dim] | None
    #: numpy name of the element type (``float32``, ``float16``, ``uint8``, ...).
    dtype: str


@dataclass(frozen=True)
class ModelFile:
    """What a user's model file declares, read without loading it."""

    path: Path
    format: str
    input: ModelInput
    #: The precision the file shows (None: it cannot tell) and what showed it.
    precision: str | None
    precision_from: str
    sha256: str = ""
    size_bytes: int = 0


def format_of(path: Path) -> str | None:
    """The artifact format of a model file, by its suffix (None: not one taken as it is)."""
    return SUFFIXES.get(path.suffix.lower())


def read_model_file(path: Path) -> ModelFile:
    """Read what a user's ``.onnx`` or ``.pte`` declares: its one input, and the precision it shows.

    Raises:
        ModelFileError: not a model file of that kind, a hostile one, or one whose input cannot be fed.
    """
    fmt = format_of(path)
    if fmt is None:
        raise ModelFileError(f"{path}: not a model file edge-agent bench takes as it is ({', '.join(SUFFIXES)})")
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            raise ModelFileError(f"{path}: a symbolic link that leads nowhere (a loop, or its target is missing)")
        raise ModelFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    real = path.resolve()  # the guard opens without following links: a link to a model is read where it points
    try:
        info = {"onnx": _read_onnx, "executorch": _read_pte, "litert": _read_tflite}[fmt](real)
        size = real.stat().st_size
        sha = sha256_file(real)
    except (ArtifactRejected, ExecutorchLoadError, litert.LiteRTLoadError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if info.input.dtype not in INPUT_DTYPES:
        raise ModelFileError(
            f"{path}: input {info.input.name!r} is {info.input.dtype}; edge-agent bench feeds {' or '.join(INPUT_DTYPES)} inputs"
        )
    return ModelFile(path, fmt, info.input, info.precision, info.precision_from, sha, size)


# ----- ONNX ---------------------------------------------------------------------------------------------------


def _fields(src: Any, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """The fields of one message: (number, wire type, value or start of the bytes, length of the bytes)."""
    pos = start
    while pos < end:
        key, pos = onnx_guard._varint(src, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = onnx_guard._varint(src, pos, end)
            yield number, wire, value, 0
        elif wire == 2:
            length, pos = onnx_guard._varint(src, pos, end)
            yield number, wire, pos, length
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ArtifactRejected(f"the ONNX file is not a valid protobuf (wire type {wire})")


@dataclass
class _Graph:
    inputs: list[tuple[str, int, int]] = field(default_factory=list)  # name, ValueInfoProto start, end
    initializers: set[str] = field(default_factory=set)
    weight_types: set[int] = field(default_factory=set)
    quantized_ops: set[str] = field(default_factory=set)


def _text(src: Any, pos: int, length: int, what: str) -> str:
    return onnx_guard._text(src, pos, length, what)


def _printable(text: str) -> str:
    """A name from the file as messages may show it: one line, no terminal control sequences."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _read_onnx(path: Path) -> ModelFile:
    """The ONNX file checked by the device's guard, then its top-level graph read through the same schema."""
    onnx_guard.check_model_file(str(path))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        src = onnx_guard._Source(fd=fd, size=os.fstat(fd).st_size)
        graph = _Graph()
        for number, wire, pos, length in _fields(src, 0, src.size):
            if number == 7 and wire == 2:  # ModelProto.graph (repeated occurrences merge: their fields add up)
                _read_graph(src, pos, pos + length, graph)
        inputs = [(name, start, end) for name, start, end in graph.inputs if name not in graph.initializers]
        if len(inputs) != 1:
            names = ", ".join(repr(name) for name, _, _ in inputs[:8]) or "none"
            raise ArtifactRejected(f"the model has {len(inputs)} inputs ({names}); edge-agent bench feeds one input tensor")
        name, start, end = inputs[0]
        model_input = _value_info(src, name, start, end)
    finally:
        os.close(fd)
    return ModelFile(path, "onnx", model_input, *_onnx_precision(model_input, graph))


def _string(src: Any, start: int, end: int, number: int, what: str) -> str:
    """The string field ``number`` of the message at ``start..end`` (the last one, as protobuf reads it), or ''."""
    found = ""
    for n, w, p, ln in _fields(src, start, end):
        if (n, w) == (number, 2):
            found = _text(src, p, ln, what)
    return found


def _read_graph(src: Any, start: int, end: int, graph: _Graph) -> None:
    for number, wire, pos, length in _fields(src, start, end):
        if wire != 2:
            continue
        end_ = pos + length
        if number == 1:  # node: op_type (4), domain (7)
            op, domain = _string(src, pos, end_, 4, "NodeProto.op_type"), _string(src, pos, end_, 7, "NodeProto.domain")
            if op in _QUANTIZED_OPS or op.startswith("QLinear") or op.endswith("Integer"):
                graph.quantized_ops.add(op if domain in ("", "ai.onnx") else f"{domain}.{op}")
        elif number in (5, 15):  # initializer (TensorProto); sparse_initializer (SparseTensorProto, its values: 1)
            tensor = (pos, end_)
            if number == 15:
                tensor = next(((p, p + ln) for n, w, p, ln in _fields(src, pos, end_) if (n, w) == (1, 2)), (0, 0))
            graph.initializers.add(_string(src, *tensor, 8, "TensorProto.name"))
            graph.weight_types.update(p for n, w, p, _ in _fields(src, *tensor) if (n, w) == (2, 0))
        elif number == 11:  # input (ValueInfoProto): name (1)
            graph.inputs.append((_string(src, pos, end_, 1, "ValueInfoProto.name"), pos, end_))


def _value_info(src: Any, name: str, start: int, end: int) -> ModelInput:
    """A graph input: ``type.tensor_type`` → ``elem_type`` and ``shape.dim`` (``dim_value`` / ``dim_param``)."""
    tensor = None
    for n, w, p, ln in _fields(src, start, end):
        if n == 2 and w == 2:  # type (TypeProto)
            for n2, w2, p2, ln2 in _fields(src, p, p + ln):
                if n2 != 6:  # anything but a denotation: the kind of value
                    tensor = (p2, p2 + ln2) if (n2, w2) == (1, 2) else None
                    if tensor is None:
                        raise ArtifactRejected(f"the model's input {name!r} is not a tensor (a sequence, a map, ...)")
    if tensor is None:
        raise ArtifactRejected(f"the model's input {name!r} declares no type")
    elem_type, shape = 0, None
    for n, w, p, ln in _fields(src, *tensor):
        if n == 1 and w == 0:
            elem_type = p
        elif n == 2 and w == 2:
            shape = [_dim(src, p2, p2 + ln2) for n2, w2, p2, ln2 in _fields(src, p, p + ln) if (n2, w2) == (1, 2)]
    if shape is not None and not shape:
        raise ArtifactRejected(f"the model's input {name!r} is a scalar; edge-agent bench feeds (batch, ...) tensors")
    if shape is not None and len(shape) > MAX_RANK:
        raise ArtifactRejected(f"the model's input {name!r} has {len(shape)} dimensions; edge-agent bench feeds up to {MAX_RANK}")
    for i, d in enumerate(shape or []):
        if isinstance(d, int) and not 0 < d <= MAX_DIM:  # fixed by the file: ONNX Runtime takes exactly that size
            raise ArtifactRejected(
                f"the model's input {name!r} fixes dimension {i} to {d}; edge-agent bench feeds sizes from 1 to {MAX_DIM}"
            )
    return ModelInput(name, shape, ONNX_TYPES.get(elem_type, f"ONNX type {elem_type}"))


def _dim(src: Any, start: int, end: int) -> Dim:
    for n, w, p, ln in _fields(src, start, end):
        if n == 1 and w == 0:
            return p if p < 1 << 63 else None  # negative (two's complement): unknown, as ONNX Runtime reads it
        if n == 2 and w == 2 and ln:
            return _printable(_text(src, p, ln, "Dimension.dim_param")[:64])
    return None


def _onnx_precision(model_input: ModelInput, graph: _Graph) -> tuple[str, str]:
    if graph.quantized_ops:
        ops = ", ".join(sorted(graph.quantized_ops)[:4])
        return "int8", f"inferred: the graph has quantized operators ({ops})"
    if graph.weight_types & _INTEGER_WEIGHTS:
        return "int8", "inferred: the graph has 8-bit (or 4-bit) integer weights"
    if model_input.dtype == "float16":
        return "fp16", "inferred: the input is float16"
    if _FLOAT16 in graph.weight_types and _FLOAT not in graph.weight_types:
        return "fp16", "inferred: the float weights are float16"
    return "fp32", "inferred: float32 input and weights, no quantized operators"


# ----- ExecuTorch ---------------------------------------------------------------------------------------------

#: An ExecuTorch program is a FlatBuffer whose file identifier, at bytes 4..8, is "ET" and two digits (the schema).
_PTE_IDENTIFIER = re.compile(rb"^ET[0-9]{2}$")


def _read_pte(path: Path) -> ModelFile:
    with path.open("rb") as fh:
        if not _PTE_IDENTIFIER.fullmatch(fh.read(8)[4:8]):
            raise ExecutorchLoadError("not an ExecuTorch program (.pte): its FlatBuffer identifier is not ET and two digits")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as program:
            shape, dtype = program_input(program)
    if any(d > MAX_DIM for d in shape[1:]):
        raise ExecutorchLoadError(f"the program's input has shape {shape}; edge-agent bench feeds sizes from 1 to {MAX_DIM}")
    model_input = ModelInput("input", list(shape), dtype)
    if dtype == "float16":
        return ModelFile(path, "executorch", model_input, "fp16", "inferred: the input is float16")
    # A program's weights sit in its delegate's payload (XNNPACK's own format): their type does not show.
    return ModelFile(path, "executorch", model_input, None, "the program's input is float32; its weights' type does not show")


def _read_tflite(path: Path) -> ModelFile:
    try:
        model = litert.load(str(path))
    except ImportError:
        raise litert.LiteRTLoadError("reading a .tflite needs ai-edge-litert: pip install 'edge-opt[agent]'") from None
    model_input = ModelInput("input", list(model.declared), "float32")  # int8 inputs are quantized by the runtime
    if litert.quantization_of(model.input) is not None:
        return ModelFile(path, "litert", model_input, "int8", "inferred: the input is int8")
    return ModelFile(path, "litert", model_input, None, "the file's input is float32; its weights' type does not show")


# ----- the input's shape and the manifest ---------------------------------------------------------------------


def parse_input_shape(text: str) -> list[int]:
    """``--input-shape``: sizes separated by ``x`` or commas, e.g. ``1x3x224x224`` or ``1,3,224,224``.

    Raises:
        InputShapeError: naming what is wrong and an example.
    """
    fix = "give the input's sizes separated by x, e.g. --input-shape 1x3x224x224"
    shown = text if len(text) <= 60 else f"{text[:56]}..."
    parts = [p.strip() for p in re.split(r"[x,X]", text.strip().strip("[]()"))]
    if not text.strip() or not all(p.isdigit() and p.isascii() for p in parts):
        raise InputShapeError(f"--input-shape {shown!r} is not a shape: {fix}")
    dims = [int(p) if len(p) <= 9 else MAX_DIM + 1 for p in parts]  # int() refuses thousands of digits
    if not 1 <= len(dims) <= MAX_RANK or not all(0 < d <= MAX_DIM for d in dims):
        raise InputShapeError(f"--input-shape {shown!r}: at most {MAX_RANK} sizes from 1 to {MAX_DIM}: {fix}")
    return dims


def _shape_text(shape: list[Dim]) -> str:
    """A declared shape as the messages show it: ``[batch, 3, height, width]`` (``?`` for an unnamed dimension)."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@dataclass(frozen=True)
class ResolvedInput:
    """The input as the manifest states it, the batch the benchmark must use (None: the command's setting), where
    the shape came from, and why ``--input-shape`` does not fit this file (None: it fits, or none was given)."""

    shape: list[int | str]
    batch_size: int | None
    shape_from: str
    input_shape_misfit: str | None = None


def _misfit(model: ModelFile, declared: list[Dim], given: list[int]) -> str | None:
    """Why ``--input-shape`` does not fit a declared shape (None: it fits): another rank, or a size the file fixes
    (a ``.pte``'s batch is the largest it was planned for)."""
    if len(given) != len(declared):
        return f"has {len(declared)} dimensions ({_shape_text(declared)}); --input-shape gives {len(given)}"
    for i, (d, g) in enumerate(zip(declared, given, strict=True)):
        if i == 0 and model.format == "litert":  # any batch is fed
            continue
        if isinstance(d, int) and (g > d if i == 0 and model.format == "executorch" else g != d):
            what = "the batch" if i == 0 else f"dimension {i}"
            return f"has shape {_shape_text(declared)}: {what} is {d} in the file, --input-shape says {g}"
    return None


def resolve_input(model: ModelFile, given: list[int] | None, batch_size: int | None) -> ResolvedInput:
    """The input shape a benchmark of ``model`` feeds: the file's sizes, its dynamic ones fixed by ``--input-shape``
    (``given``, the whole shape). ``--input-shape`` applies to a file it fits (same rank, the same sizes where the
    file fixes them); a file it does not fit is benchmarked with its own sizes if it declares them all. The first
    dimension is the batch: ``--batch-size``'s when set, else ``--input-shape``'s first size (where it applies),
    else the file's.

    Raises:
        InputShapeError: a dynamic dimension without an ``--input-shape`` that fits, or a batch the file contradicts.
    """
    name, declared = model.input.name, model.input.shape
    where = f"{model.path}: input {name!r}"
    misfit = None
    if given is not None:
        misfit = _misfit(model, declared if declared is not None else [None] * len(given), given)
    if declared is None:
        if given is None or misfit is not None:
            raise InputShapeError(f"{where} declares no shape; give it with --input-shape (the whole shape, e.g. 1x3x224x224)")
        declared = [None] * len(given)
    dynamic = [i for i, d in enumerate(declared) if not isinstance(d, int) and i > 0]
    applies = given is not None and misfit is None
    if dynamic and misfit is not None:
        raise InputShapeError(f"{where} {misfit}")
    if dynamic and not applies:
        named = [str(declared[i] or f"dim{i}") for i in dynamic]
        shown = (str(d) if isinstance(d, int) else f"<{d or f'dim{i}'}>" for i, d in enumerate(declared) if i > 0)
        example = "x".join([str(declared[0]) if isinstance(declared[0], int) else "1", *shown])
        raise InputShapeError(
            f"{where} of shape {_shape_text(declared)} has dynamic dimensions ({', '.join(named)}): give the whole "
            f"shape with --input-shape, e.g. --input-shape {example}"
        )
    used = given if applies and given is not None else None
    shape_from = f"--input-shape {'x'.join(map(str, used))}" if used is not None and dynamic else "the file"
    sizes = [d if isinstance(d, int) else (used or [])[i] for i, d in enumerate(declared) if i > 0]
    batch = batch_size or (used[0] if used is not None else None)
    first = declared[0]
    misfit = f"{where} {misfit}" if misfit is not None else None
    if model.format == "executorch":
        planned = int(first) if isinstance(first, int) else 1
        if batch is not None and batch > planned:
            raise InputShapeError(
                f"{model.path} is an ExecuTorch program planned for batch {planned}: give --batch-size {planned} or less"
            )
        return ResolvedInput(["batch", *sizes], batch, shape_from, misfit)
    if model.format == "litert":
        return ResolvedInput(["batch", *sizes], batch or (int(first) if isinstance(first, int) else None), shape_from, misfit)
    if isinstance(first, int):
        if batch is not None and batch != first:
            raise InputShapeError(f"{where} has a fixed batch of {first}: leave --batch-size out or give {first}")
        return ResolvedInput([first, *sizes], first, shape_from, misfit)
    return ResolvedInput([first or "batch", *sizes], batch, shape_from, misfit)


def manifest_for(model: ModelFile, resolved: ResolvedInput, precision: str | None) -> dict[str, Any]:
    """The manifest the device needs for a user's model file (the schema the store parses), saying where each
    fact came from: ``source.kind`` is ``user-file``."""
    if precision is not None and precision not in PRECISIONS:
        raise InputShapeError(f"--precision {precision!r} must be one of {', '.join(sorted(PRECISIONS))}")
    chosen = precision or model.precision or ("fp16" if model.input.dtype == "float16" else "fp32")
    if precision is not None:
        precision_from = f"stated with --precision ({model.precision_from})"
    elif model.precision is None:
        precision_from = f"assumed from the input's dtype: {model.precision_from}; state it with --precision"
    else:
        precision_from = model.precision_from
    fmt = MODEL_FORMATS[model.format]
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "producer": f"edge-agent {__version__}",
        "source": {
            "kind": "user-file",
            "file_name": model.path.name,
            "precision_from": precision_from,
            "input_shape_from": resolved.shape_from,
        },
        "model": {"name": model.path.stem},
        "precision": chosen,
        "format": fmt.name,
        "runtime": fmt.runtime,
        "input": {"name": model.input.name, "shape": resolved.shape, "dtype": model.input.dtype},
        "file": {"name": fmt.file_name, "sha256": model.sha256, "size_bytes": model.size_bytes},
    }


_NAME = re.compile(r"[^A-Za-z0-9._-]")


def stage_model_file(model: ModelFile, manifest: dict[str, Any], parent: Path) -> Path:
    """An artifact folder for ``model`` under ``parent`` (a fresh folder of the caller's): ``manifest.json`` and
    the model file (a link to the user's file, or a copy where links cannot be made). The folder's name is the
    file's, as the device lists it."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / (_NAME.sub("_", model.path.name)[:128] or "model")
    folder.mkdir()
    target = folder / manifest["file"]["name"]
    try:
        target.symlink_to(model.path.resolve())
    except OSError:
        shutil.copyfile(model.path, target)
    write_manifest(folder, manifest)
    return folder
