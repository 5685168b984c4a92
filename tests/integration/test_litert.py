"""The litert format end to end: ``edge-export --format litert`` writes FP32, FP16 and INT8 ``.tflite`` files whose
claimed accuracy a plain LiteRT interpreter reproduces on the full Fashion-MNIST test set (no project code on that
side), and a real agent on 127.0.0.1 (port 0, in-process) benchmarks and evaluates them with ai-edge-litert."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import FAST, client_for
from conftest import parse_json_result, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRECISIONS = ("fp32", "fp16", "int8")


def _read_idx(path: Path) -> np.ndarray:
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def _test_split(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = data_root / "FashionMNIST" / "raw"

    def find(stem: str) -> Path:
        return next(p for p in (raw / stem, raw / f"{stem}.gz") if p.exists())

    return _read_idx(find("t10k-images-idx3-ubyte")), _read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> tuple[Path, dict]:
    """The trained SmallCNN exported as litert at every precision: ``(out_dir, the --json result)``."""
    out = tmp_path_factory.mktemp("litert-export") / "out"
    proc = run_cli(["--precision", ",".join(PRECISIONS), "--format", "litert", "--out", str(out), "--json"], cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, parse_json_result(proc.stdout)


def test_plain_interpreter_reproduces_the_claimed_accuracy(exported: tuple[Path, dict], data_root: Path) -> None:
    # setup: the written artifacts, the raw test split and each manifest's preprocessing
    from ai_edge_litert.interpreter import Interpreter

    _out, result = exported
    rows = {a["precision"]: a for a in result["data"]["artifacts"]}
    assert set(rows) == set(PRECISIONS) and all(r["written"] and r["format"] == "litert" for r in rows.values())
    images, labels = _test_split(data_root)
    for precision in PRECISIONS:
        folder = Path(rows[precision]["path"])
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["runtime"] == "litert" and manifest["file"]["name"] == "model.tflite"
        assert manifest["litert"]["delegate"] == "XNNPACK" and manifest["litert"]["input_layout"] == "NCHW"
        n = manifest["host_metrics"]["accuracy_samples"]
        assert n == len(labels) == 10000  # the full test set
        p = manifest["preprocessing"]
        x = ((images[:n].astype(np.float32)[:, None] * np.float32(p["scale"])) - np.float32(p["mean"])) / np.float32(p["std"])
        # execute: a plain interpreter, the input quantized by hand when it is integer
        interpreter = Interpreter(model_path=str(folder / "model.tflite"), num_threads=1)
        interpreter.allocate_tensors()
        inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        batch = int(inp["shape"][0])
        predicted = []
        for start in range(0, n, batch):
            xb = x[start : start + batch]
            if inp["dtype"] == np.int8:
                scale, zero = inp["quantization"]
                xb = np.clip(np.round(xb / scale) + zero, -128, 127).astype(np.int8)
            interpreter.set_tensor(inp["index"], xb)
            interpreter.invoke()
            y = interpreter.get_tensor(outp["index"]).astype(np.float32)
            if outp["dtype"] == np.int8:
                scale, zero = outp["quantization"]
                y = (y - zero) * scale
            predicted.append(y.argmax(1))
        accuracy = float((np.concatenate(predicted) == labels[:n]).mean())
        # assert: the claim is reproduced; the manifest records what an integer model needs
        assert accuracy == manifest["host_metrics"]["accuracy"], precision
        assert accuracy > 0.85, precision
        if precision == "int8":
            assert manifest["quantization"]["input"]["dtype"] == "int8" and manifest["quantization"]["output"]["dtype"] == "int8"
            assert manifest["litert"]["input_quantization"] == manifest["quantization"]["input"]
            assert rows["int8"]["size_bytes"] < 0.35 * rows["fp32"]["size_bytes"]
        else:
            assert manifest["litert"]["input_quantization"] is None
    assert 0.4 < rows["fp16"]["size_bytes"] / rows["fp32"]["size_bytes"] < 0.6


def test_agent_benchmarks_and_evaluates_the_tflite_artifacts(agent, exported: tuple[Path, dict]) -> None:
    # setup: an agent in this process; each artifact with the evaluation set and its host reference
    port, store = agent
    out, result = exported
    with client_for(port, timeout=120) as client:
        info = client.info()
        runtimes = {r["name"]: r for r in info["runtimes"]}
        assert "XNNPACK" in runtimes["ai-edge-litert"]["providers"]
        for artifact in result["data"]["artifacts"]:
            folder = Path(artifact["path"])
            manifest = json.loads((folder / "manifest.json").read_text())
            evaluation = manifest["host_metrics"]["device_evaluation"]
            sets = out / evaluation["folder"]
            # execute
            sha = client.push(folder).sha256
            for key in ("eval_set_sha256", "reference_sha256"):
                client.push(sets / evaluation[key])
            settings = {**FAST, "threads": 1, "batch_size": 4}
            events = list(
                client.bench(
                    sha, settings, eval_set_sha256=evaluation["eval_set_sha256"],
                    eval_reference_sha256=evaluation["reference_sha256"],
                )
            )  # fmt: skip
            # assert: the run is LiteRT's, and the device reproduces the host's outputs on the evaluation set
            last = events[-1]
            assert last["state"] == "RUN_STATE_SUCCEEDED", last
            run = last["result"]
            assert run["runtime"] == "litert" and run["runtime_version"] == "2.3.0"
            assert (store / "artifacts" / sha / "model.tflite").is_file()
            device = run["evaluation"]
            assert device["samples"] == evaluation["samples"]
            assert device["agreement_with_host"] == 1.0, (artifact["precision"], device)
            assert device["max_abs_diff"] < 1e-3 * max(1.0, evaluation["reference_scale"]), (artifact["precision"], device)
            assert abs(device["top1_accuracy"] - evaluation["host_accuracy"]) < 1e-9


def test_a_users_tflite_file_is_benchmarked_as_it_is(
    agent, token_file: Path, exported: tuple[Path, dict], tmp_path: Path
) -> None:
    """``edge-agent bench FILE.tflite``: no manifest needed; the input comes from the file, any batch is fed, an INT8
    file is named so, and a file that is not a LiteRT model is refused before anything is sent."""
    import subprocess
    import sys

    # setup: the INT8 model file alone, under the user's own name, and a fake one
    port, store = agent
    _out, result = exported
    folder = next(Path(a["path"]) for a in result["data"]["artifacts"] if a["precision"] == "int8")
    mine = tmp_path / "mine.tflite"
    mine.write_bytes((folder / "model.tflite").read_bytes())
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x10\x00\x00\x00TFL3" + bytes(200))
    quick = ["--iterations", "5", "--min-seconds", "0.01", "--warmup-runs", "1", "--warmup-seconds", "0.01"]

    def bench(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "edge_agent.cli", "bench", str(path), *args, "--device", f"127.0.0.1:{port}",
                "--token-file", str(token_file), *quick]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)

    # execute
    ok = bench(mine, "--batch-size", "4", "--json")
    refused = bench(fake)
    # assert: a LiteRT run of the file's own bytes, stated as INT8, at batch 4; the fake never reaches the device
    assert ok.returncode == 0, ok.stdout + ok.stderr
    [entry] = json.loads(ok.stdout)["data"]
    assert entry["state"] == "RUN_STATE_SUCCEEDED" and entry["result"]["runtime"] == "litert", entry
    manifest = json.loads((store / "artifacts" / entry["sha256"] / "manifest.json").read_text())
    assert (manifest["format"], manifest["precision"]) == ("litert", "int8")
    assert manifest["input"]["shape"] == ["batch", 1, 28, 28] and manifest["source"]["kind"] == "user-file"
    assert refused.returncode == 1 and "fake.tflite" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
