"""``edge-agent bench`` fed model files its authors did not plan for, read on the host: the corpus's ``host_*``
files, links, FIFOs, folders named like files, a ``.pte`` declaring sizes beyond the bounds, an ``--input-shape`` of
thousands of digits. Each is one line on stderr with its exit code, never a traceback, before any call (the device
address answers nothing: reaching it would be exit 7). Every command runs with a bounded address space, so a
regression is a MemoryError here, not a host brought down by the OOM killer."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO
from onnx import TensorProto, helper

from reliability.hostile_onnx import host_refused_models

CORPUS = REPO / "tests" / "data" / "malicious_onnx"
#: Address space of every command here: room for torch and the data, not for a bomb.
ADDRESS_SPACE = 8 << 30


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _cli(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        preexec_fn=_limited,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge-agent: error: "), proc.stderr[-3000:]
    assert "\x1b" not in lines[0], repr(lines[0])
    return lines[0]


def _model(path: Path, dims: list, nodes: list | None = None) -> Path:
    """A float model of one input ``x`` of ``dims``: global average pooling to one score per channel by default."""
    nodes = nodes or [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.write_bytes(model.SerializeToString())
    return path


def _pte(sizes: list[int]) -> bytes:
    """The smallest ExecuTorch program FlatBuffer the host reads: a forward plan of one float32 input of ``sizes``."""
    import flatbuffers

    b = flatbuffers.Builder(256)
    b.StartVector(4, len(sizes), 4)
    for d in reversed(sizes):
        b.PrependInt32(d)
    dims = b.EndVector()
    b.StartObject(3)  # Tensor: scalar_type, -, sizes
    b.PrependInt8Slot(0, 6, 0)
    b.PrependUOffsetTRelativeSlot(2, dims, 0)
    tensor = b.EndObject()
    b.StartObject(2)  # EValue: val_type (Tensor), val
    b.PrependUint8Slot(0, 5, 0)
    b.PrependUOffsetTRelativeSlot(1, tensor, 0)
    evalue = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(evalue)
    values = b.EndVector()
    b.StartVector(4, 1, 4)
    b.PrependInt32(0)
    inputs = b.EndVector()
    name = b.CreateString("forward")
    b.StartObject(4)  # ExecutionPlan: name, -, values, inputs
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(2, values, 0)
    b.PrependUOffsetTRelativeSlot(3, inputs, 0)
    plan = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(plan)
    plans = b.EndVector()
    b.StartObject(2)  # Program: -, execution_plan
    b.PrependUOffsetTRelativeSlot(1, plans, 0)
    b.Finish(b.EndObject(), file_identifier=b"ET12")
    return bytes(b.Output())


# ----- model files read on the host ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(host_refused_models()))
def test_corpus_files_the_host_cannot_feed_are_one_line(name: str) -> None:
    _data, code, named = host_refused_models()[name]
    path = CORPUS / f"{name}.onnx"
    assert path.read_bytes() == _data, f"{path} is stale: run python tests/reliability/hostile_onnx.py"
    proc = _cli("bench", path, "--device", f"127.0.0.1:{_closed_port()}", "--timeout", "5")
    assert proc.returncode == code, proc.stderr
    assert named in _one_line(proc)


def _loop(tmp: Path) -> tuple[Path, list[str]]:
    link = tmp / "loop.onnx"
    link.symlink_to(link.name)
    return link, []


def _fifo(tmp: Path) -> tuple[Path, list[str]]:
    os.mkfifo(tmp / "pipe.onnx")
    return tmp / "pipe.onnx", []


def _folder_named_onnx(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "model.onnx").mkdir()
    return tmp / "model.onnx", []


def _pte_beyond_bounds(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "big.pte").write_bytes(_pte([1, 3, 28, 1 << 24]))
    return tmp / "big.pte", []


def _input_shape_of_5000_digits(tmp: Path) -> tuple[Path, list[str]]:
    return _model(tmp / "m.onnx", ["batch", 3, "h", "w"]), ["--input-shape", "9" * 5000]


HOST_FILES: dict[str, tuple[Callable[[Path], tuple[Path, list[str]]], int, str]] = {
    "symbolic link loop": (_loop, 1, "a symbolic link that leads nowhere"),
    "FIFO": (_fifo, 1, "not a regular file"),
    "folder named model.onnx": (_folder_named_onnx, 1, "a folder, not a .onnx file"),
    ".pte input beyond 2^20": (_pte_beyond_bounds, 1, "feeds sizes from 1 to 1048576"),
    "--input-shape of 5000 digits": (_input_shape_of_5000_digits, 2, "at most 8 sizes from 1 to 1048576"),
}


@pytest.mark.parametrize("case", sorted(HOST_FILES))
def test_hostile_paths_and_shapes_are_one_line(tmp_path: Path, case: str) -> None:
    make, code, named = HOST_FILES[case]
    path, extra = make(tmp_path)
    proc = _cli("bench", path, *extra, "--device", f"127.0.0.1:{_closed_port()}", "--timeout", "5")
    assert proc.returncode == code, proc.stderr[-3000:]
    line = _one_line(proc)
    assert named in line and len(line) < 400, line
