"""``edge-agent bench`` fed what its authors did not plan for: hostile model files read on the host (the corpus's
``host_*`` files, links, FIFOs, folders named like files, a ``.pte`` declaring sizes beyond the bounds),
``--input-shape`` and ``--data`` edge cases (zip bombs in ``.npz``, decompression-bomb images, symbolic link loops,
absurd sizes and normalisations, a malformed preprocessing record). Each is one line on stderr with its exit code,
never a traceback; the host-side cases fail before any call (the device address answers nothing: reaching it would
be exit 7). Every command runs with a bounded address space, so a regression is a MemoryError here, not a host
brought down by the OOM killer. With a real agent: a file whose batch is fixed is evaluated on the data, a model the
device cannot evaluate is named (exit 8, the timing kept), ``--json`` is strict JSON, and nothing is lost."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import write_artifact
from conftest import REPO
from onnx import TensorProto, helper
from PIL import Image

from reliability.hostile_onnx import host_refused_models
from reliability.reliability_harness import nothing_lost

CORPUS = REPO / "tests" / "data" / "malicious_onnx"
QUICK = ["--iterations", "5", "--min-seconds", "0.01", "--warmup-runs", "1", "--warmup-seconds", "0.01"]
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


def _images(folder: Path, size: int = 12, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    return folder


def _npy_header(shape: tuple, descr: str = "|u1") -> bytes:
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


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


# ----- --data --------------------------------------------------------------------------------------------------


def _zip_bomb(tmp: Path) -> list[str]:
    """300 MiB of zeros deflated to a few hundred KiB: refused by its ratio before numpy allocates it."""
    path = tmp / "bomb.npz"
    count = (300 << 20) // (12 * 12 * 3)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("x.npy", "w", force_zip64=True) as fh,
    ):
        fh.write(_npy_header((count, 12, 12, 3)))
        left, zeros = count * 12 * 12 * 3, bytes(16 << 20)
        while left:
            fh.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))
    return ["--data", str(path)]


def _declares_more_than_it_holds(tmp: Path) -> list[str]:
    path = tmp / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", _npy_header((10**7, 10**4, 10**3)) + bytes(100))
    return ["--data", str(path)]


def _image_over_the_bomb_threshold(tmp: Path) -> list[str]:
    folder = _images(tmp / "photos")
    Image.new("L", (9500, 9500)).save(folder / "dog" / "big.png")  # 90 M pixels in a few kB
    return ["--data", str(folder)]


def _class_folder_loop(tmp: Path) -> list[str]:
    folder = _images(tmp / "photos")
    (folder / "loop").symlink_to("loop")
    return ["--data", str(folder)]


def _resize_to_ten_gigapixels(tmp: Path) -> list[str]:
    return ["--data", str(_images(tmp / "photos")), "--resize", "100000"]


HOST_DATA: dict[str, tuple[Callable[[Path], list[str]], int, str]] = {
    "npz zip bomb": (_zip_bomb, 3, "a zip bomb"),
    "npz declaring more than it holds": (_declares_more_than_it_holds, 3, "declares shape [10000000, 10000, 1000]"),
    "image over the decompression-bomb threshold": (_image_over_the_bomb_threshold, 3, "decompression bomb"),
    "class folder that is a symbolic link loop": (_class_folder_loop, 3, "Too many levels of symbolic links"),
    "--resize to 10^10 pixels": (_resize_to_ten_gigapixels, 3, "give a smaller --resize"),
    "--std 0": (lambda tmp: ["--data", str(_images(tmp / "photos")), "--std", "0"], 3, "std 0.0 must be positive"),
    "--mean nan": (lambda tmp: ["--data", str(_images(tmp / "photos")), "--mean", "nan"], 3, "mean nan is not a finite"),
    "--eval-samples 0": (lambda tmp: ["--data", str(_images(tmp / "photos")), "--eval-samples", "0"], 2, "at least 1"),
    "--eval-samples -3": (lambda tmp: ["--data", str(_images(tmp / "photos")), "--eval-samples", "-3"], 2, "at least 1"),
}


@pytest.mark.parametrize("case", sorted(HOST_DATA))
def test_hostile_data_is_one_line_and_its_exit_code(tmp_path: Path, case: str) -> None:
    make, code, named = HOST_DATA[case]
    model = _model(tmp_path / "m.onnx", ["batch", 3, "h", "w"])
    proc = _cli(
        "bench", model, "--input-shape", "1x3x8x8", *make(tmp_path), "--device", f"127.0.0.1:{_closed_port()}", "--timeout", "5"
    )
    assert proc.returncode == code, proc.stderr[-3000:]
    line = _one_line(proc)
    assert named in line, line


def test_an_input_too_large_for_an_evaluation_set_is_named(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx", ["batch", 3, "h", "w"])
    data = _images(tmp_path / "photos")
    proc = _cli("bench", model, "--input-shape", "1x3x8000x8000", "--data", data, "--device", f"127.0.0.1:{_closed_port()}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "more than an evaluation set may hold" in _one_line(proc)


@pytest.mark.parametrize("record", [{"mean": 0.5, "std": 1, "resize_to": 5}, {"mean": "abc", "std": 1}, {"mean": 0.5, "std": 0}])
def test_a_malformed_preprocessing_record_is_one_line(tmp_path: Path, record: dict) -> None:
    folder = write_artifact(
        tmp_path / "art", _model(tmp_path / "m.onnx", ["batch", 3, 8, 8]).read_bytes(), input_shape=["batch", 3, 8, 8]
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["preprocessing"] = record
    (folder / "manifest.json").write_text(json.dumps(manifest))
    proc = _cli("bench", folder, "--data", _images(tmp_path / "photos"), "--device", f"127.0.0.1:{_closed_port()}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "preprocessing this host cannot apply" in _one_line(proc)


# ----- with a real agent ---------------------------------------------------------------------------------------


def test_fixed_batches_and_unevaluable_models_are_named_and_nothing_is_lost(make_agent, token_file: Path, tmp_path: Path) -> None:
    # setup: a file fixing its batch to 1 (ONNX Runtime takes exactly one item per call); a model that gives two
    # rows of outputs per item (no row per item to compare); a real agent
    agent = make_agent()
    fixed = _model(tmp_path / "fixed.onnx", [1, 3, 8, 8])
    doubled = _model(
        tmp_path / "doubled.onnx",
        ["batch", 3, 8, 8],
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Concat", ["f", "f"], ["y"], axis=0)],
    )
    data = _images(tmp_path / "photos", per_class=4)
    device = ["--device", f"127.0.0.1:{agent.port}", "--token-file", token_file, *QUICK, "--data", data]
    # execute
    ok = _cli("bench", fixed, *device, "--json")
    human = _cli("bench", fixed, *device)
    failed = _cli("bench", doubled, *device, "--json")
    failed_human = _cli("bench", doubled, *device)
    # assert: the fixed batch is fed one item at a time on both sides; the JSON is strict (NaN is not JSON)
    assert ok.returncode == 0, ok.stderr[-3000:]
    envelope = json.loads(ok.stdout, parse_constant=lambda c: pytest.fail(f"--json printed {c}, which is not JSON"))
    evaluation = envelope["data"][0]["result"]["evaluation"]
    assert not evaluation["error"] and evaluation["samples"] == 8 and evaluation["agreement_with_host"] == 1.0, evaluation
    assert human.returncode == 0 and "evaluated: n=8" in human.stdout, human.stdout + human.stderr
    # a model the device cannot evaluate: the timing stands, the evaluation's failure is named, exit 8
    assert failed.returncode == 8, failed.stdout + failed.stderr[-3000:]
    envelope = json.loads(failed.stdout, parse_constant=lambda c: pytest.fail(f"--json printed {c}"))
    [entry] = envelope["data"]
    assert entry["state"] == "RUN_STATE_SUCCEEDED" and entry["result"]["latency"]["count"] >= 5
    [error] = envelope["errors"]
    assert error["code"] == "evaluation" and "one row of outputs per item" in error["message"], error
    assert failed_human.returncode == 8 and "EVALUATION FAILED" in failed_human.stdout
    nothing_lost(agent.port, agent.store)
