"""Bad data gets one clear line and exit 3, never a traceback, and nothing is written; one refused artifact does
not discard the others (exit 8, each refusal named with its reason and fix)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, parse_json_result, run_cli
from PIL import Image

pytestmark = [pytest.mark.integration]

EXIT_DATA = 3
RANDOM_MODEL = ["--model", "usernets:build", "--input-size", "32", "--precision", "fp32", "--format", "onnx"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_OPT_DATA_DIR"}
    env["EDGE_OPT_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH", "")]))
    return env


def _images(folder: Path, classes: dict[str, int], size: int = 20) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")


def _case(tmp_path: Path, name: str) -> tuple[list[str], str]:
    """The data flags of one bad case, and the words its error must contain."""
    root = tmp_path / "data"
    root.mkdir()
    if name == "empty folder":
        return ["--data", str(root)], "no class subfolders"
    if name == "empty split":
        _images(root / "train", {"a": 3, "b": 3})
        (root / "val").mkdir()
        return ["--data", str(root)], "val has no class subfolders"
    if name == "class without images":
        _images(root, {"cat": 4})
        (root / "dog").mkdir()
        (root / "dog" / "notes.txt").write_text("not an image")
        return ["--data", str(root)], f"class folder {root / 'dog'} has no images"
    if name == "truncated image":
        _images(root, {"cat": 4, "dog": 4})
        broken = root / "dog" / "2.png"
        broken.write_bytes(broken.read_bytes()[:60])
        return ["--data", str(root)], f"cannot read image {broken}"
    if name == "not an image":
        _images(root, {"cat": 4, "dog": 4})
        (root / "cat" / "9.jpg").write_bytes(b"this is text, not a JPEG")
        return ["--data", str(root)], f"cannot read image {root / 'cat' / '9.jpg'}"
    if name == "channels the model cannot take":
        np.savez(root / "rgb.npz", x=np.zeros((10, 28, 28, 3), np.uint8), y=np.zeros(10, np.int64))
        return ["--data", str(root / "rgb.npz"), "--model", "smallcnn", "--checkpoint", str(_smallcnn_weights(root))], (
            "3 channel(s), smallcnn takes 1"
        )
    if name == "labels outside the outputs":
        np.savez(root / "d.npz", x=np.zeros((10, 32, 32, 3), np.uint8), y=np.arange(10) + 5)
        return ["--data", str(root / "d.npz"), "--num-classes", "10"], "labels up to 14"
    if name == "npz without x":
        np.savez(root / "d.npz", images=np.zeros((10, 32, 32, 3), np.uint8))
        return ["--data", str(root / "d.npz")], "no array named x (it has: images)"
    if name == "lengths differ":
        np.savez(root / "d.npz", x=np.zeros((10, 32, 32, 3), np.uint8), y=np.zeros(9, np.int64))
        return ["--data", str(root / "d.npz")], "9 labels for 10 inputs"
    if name == "pickled npz":
        np.savez(root / "d.npz", x=np.array([{"a": 1}] * 4, dtype=object))
        return ["--data", str(root / "d.npz")], "never unpickled"
    if name == "factory not importable":
        return ["--data", "no_such_module:data"], "cannot import data factory 'no_such_module:data'"
    if name == "factory returns something else":
        return ["--data", "usernets:not_a_dataset"], "returned int"
    raise AssertionError(name)


def _smallcnn_weights(root: Path) -> Path:
    import torch
    from edge_opt.model.models import SmallCNN

    path = root / "smallcnn.pt"
    torch.save(SmallCNN().state_dict(), path)
    return path


CASES = [
    "empty folder", "empty split", "class without images", "truncated image", "not an image",
    "channels the model cannot take", "labels outside the outputs", "npz without x", "lengths differ", "pickled npz",
    "factory not importable", "factory returns something else",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_line_and_exit_3(case: str, tmp_path: Path, env: dict[str, str]) -> None:
    # setup
    data_args, words = _case(tmp_path, case)
    out = tmp_path / "out"
    model = [] if "--model" in data_args else RANDOM_MODEL
    precision = ["--precision", "fp32", "--format", "onnx"] if model == [] else []
    # execute
    proc = run_cli([*model, *precision, *data_args, "--out", str(out), "--json"], env, timeout=300)
    # assert
    assert proc.returncode == EXIT_DATA, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edge-export: error:")]
    assert len(lines) == 1 and words in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    result = parse_json_result(proc.stdout)
    assert result["exit_code"] == EXIT_DATA and result["errors"][0]["code"] == "data"
    assert not out.exists() or not any(p.name == "manifest.json" for p in out.rglob("*")), "something was written"


def test_one_refused_artifact_does_not_discard_the_rest(tmp_path: Path, env: dict[str, str]) -> None:
    # setup: a model whose logits overflow float16; its FP32 artifact is fine
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8))
    args = ["--model", "usernets:overflowing", "--data", str(tmp_path / "d.npz"), "--input-size", "32",
            "--precision", "fp32,fp16", "--format", "onnx", "--out", str(tmp_path / "out")]  # fmt: skip
    # execute
    proc = run_cli([*args, "--json"], env, timeout=600)
    table = run_cli([*args[:-1], str(tmp_path / "out2")], env, timeout=600)
    # assert: FP32 written, FP16 named with its reason and fix, exit 8 (partial)
    assert proc.returncode == 8, proc.stderr[-2000:]
    result = parse_json_result(proc.stdout)
    assert result["status"] == "partial"
    written = [a for a in result["data"]["artifacts"] if a["written"]]
    assert [(a["precision"], a["format"]) for a in written] == [("fp32", "onnx")]
    assert (Path(written[0]["path"]) / "manifest.json").is_file()
    [(name, why)] = result["data"]["refused"].items()
    assert name.endswith("fp16-onnx") and "non-finite" in why and "leave fp16 out" in why
    assert any(e["code"] == "export" and name in e["message"] for e in result["errors"])
    assert not (tmp_path / "out" / name).exists()
    assert table.returncode == 8 and "refused, not written" in table.stdout and name in table.stdout
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["refused"] == result["data"]["refused"]
