"""``edge-agent bench`` from the command line against a real agent on 127.0.0.1: model files taken as they are
(``.onnx`` written by plain ``torch.onnx.export``, a ``.pte``), mixed with artifact folders; each artifact gets its
result or its named failure; bad arguments are one line and the right exit code, never a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from agent_helpers import FAST, TOKEN, AgentProcess, client_for, tiny_onnx_bytes, write_artifact
from conftest import REPO
from torch import nn

pytestmark = pytest.mark.integration

MALICIOUS = REPO / "tests" / "data" / "malicious_onnx"
QUICK = ["--iterations", "5", "--min-seconds", "0.01", "--warmup-runs", "1", "--warmup-seconds", "0.01"]


class TinyCnn(nn.Module):
    """3-channel images of any size → 10 logits (global pooling), so its spatial dimensions can be dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1), 1))


def _export(path: Path, dynamic: dict[int, str]) -> Path:
    torch.manual_seed(0)
    torch.onnx.export(
        TinyCnn().eval(),
        (torch.randn(1, 3, 32, 32),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": dynamic, "logits": {0: "batch"}},
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Plain ONNX files as a user has them: a dynamic batch; dynamic height and width; the first quantized (QDQ)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    root = tmp_path_factory.mktemp("user-files")
    batch = _export(root / "cnn-batch.onnx", {0: "batch"})
    spatial = _export(root / "cnn-spatial.onnx", {0: "batch", 2: "height", 3: "width"})

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter([{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantized = root / "cnn-int8.onnx"
    quantize_static(str(batch), str(quantized), Calibration(), quant_format=QuantFormat.QDQ)
    return {"batch": batch, "spatial": spatial, "int8": quantized}


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token-for-cli"
    path.write_text(TOKEN)
    return path


def _cli(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


def _bench(port: int, token: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return _cli("bench", *args, "--device", f"127.0.0.1:{port}", "--token-file", token, *QUICK)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _stored_manifest(store: Path, sha: str) -> dict:
    return json.loads((store / "artifacts" / sha / "manifest.json").read_text())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- model files as they are --------------------------------------------------------------------------------


def test_an_onnx_file_is_benchmarked_as_it_is(agent, files: dict[str, Path], token: Path, tmp_path: Path) -> None:
    # setup: a file written by torch.onnx.export, nothing beside it; and a link to it, as models are often kept
    port, store = agent
    path = files["batch"]
    before = sorted(p.name for p in path.parent.iterdir())
    link = tmp_path / "current.onnx"
    link.symlink_to(path)
    # execute
    proc = _bench(port, token, path, "--batch-size", "2", "--json")
    human = _bench(port, token, path)
    linked = _bench(port, token, link, "--json")
    # assert: the envelope of an artifact's benchmark, the device holding the file with a manifest saying what it is
    assert proc.returncode == 0, proc.stdout + proc.stderr
    envelope = json.loads(proc.stdout)
    assert (envelope["command"], envelope["status"], envelope["exit_code"], envelope["errors"]) == ("bench", "ok", 0, [])
    [entry] = envelope["data"]
    assert entry["artifact"] == str(path) and entry["state"] == "RUN_STATE_SUCCEEDED"
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    result = entry["result"]
    assert result["runtime"] == "onnxruntime" and result["settings"]["batch_size"] == 2 and result["latency"]["count"] >= 5
    assert len(result["output_sample"]) == 10
    manifest = _stored_manifest(store, entry["sha256"])
    assert manifest["source"]["kind"] == "user-file" and manifest["source"]["file_name"] == "cnn-batch.onnx"
    assert manifest["source"]["input_shape_from"] == "the file"
    assert (manifest["format"], manifest["precision"], manifest["schema_version"]) == ("onnx", "fp32", 1)
    assert manifest["input"] == {"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"}
    with client_for(port) as client:
        assert [(a["name"], a["format"]) for a in client.list_artifacts()] == [("cnn-batch.onnx", "onnx")]
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("cnn-batch.onnx: p50 ") and " n=" in human.stdout
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing written beside the user's file
    assert linked.returncode == 0, linked.stderr
    assert json.loads(linked.stdout)["data"][0]["sha256"] == entry["sha256"]  # the same content, the same artifact


def test_dynamic_spatial_dimensions_are_fixed_with_input_shape(agent, files: dict[str, Path], token: Path) -> None:
    port, store = agent
    path = files["spatial"]
    # execute
    refused = _bench(port, token, path)
    refused_json = _bench(port, token, path, "--json")
    proc = _bench(port, token, path, "--input-shape", "1x3x48x40", "--batch-size", "3", "--json")
    first_size_is_the_batch = _bench(port, token, path, "--input-shape", "2,3,24,24", "--json")
    # assert: without the flag, one usage line naming the input and the flag; with it, a run on that shape
    assert refused.returncode == 2 and refused.stdout == ""
    line = _one_line(refused.stderr)
    assert "'image'" in line and "--input-shape" in line and "height" in line and "width" in line, line
    envelope = json.loads(refused_json.stdout)
    assert (envelope["status"], envelope["exit_code"], envelope["errors"][0]["code"]) == ("error", 2, "USAGE")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [entry] = json.loads(proc.stdout)["data"]
    assert entry["result"]["settings"]["batch_size"] == 3 and len(entry["result"]["output_sample"]) == 10
    manifest = _stored_manifest(store, entry["sha256"])
    assert manifest["input"]["shape"] == ["batch", 3, 48, 40]
    assert manifest["source"]["input_shape_from"] == "--input-shape 1x3x48x40"
    assert first_size_is_the_batch.returncode == 0, first_size_is_the_batch.stderr
    assert json.loads(first_size_is_the_batch.stdout)["data"][0]["result"]["settings"]["batch_size"] == 2


def test_files_and_folders_mix_and_a_quantized_graph_is_int8(agent, files: dict[str, Path], token: Path, tmp_path: Path) -> None:
    port, store = agent
    folder = write_artifact(tmp_path / "tiny-onnx", tiny_onnx_bytes())
    paths = [files["int8"], folder, files["batch"], files["spatial"]]
    # execute: --input-shape fits the file with dynamic height and width only; the others declare their sizes
    proc = _bench(port, token, *paths, "--input-shape", "1x3x40x40", "--json")
    # assert: four results in the order given, the QDQ graph stored as int8 with the evidence
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entries = json.loads(proc.stdout)["data"]
    assert [e["artifact"] for e in entries] == [str(p) for p in paths]
    assert all(e["state"] == "RUN_STATE_SUCCEEDED" for e in entries)
    manifests = [_stored_manifest(store, e["sha256"]) for e in entries]
    assert manifests[0]["precision"] == "int8" and "QuantizeLinear" in manifests[0]["source"]["precision_from"]
    assert "source" not in manifests[1]  # the folder's own manifest, as it was
    assert [m["input"]["shape"] for m in (manifests[0], manifests[2], manifests[3])] == [["batch", 3, 32, 32]] * 2 + [
        ["batch", 3, 40, 40]
    ]


@pytest.mark.usefixtures("hang_guard")
def test_a_pte_file_is_benchmarked_as_it_is(agent, tiny_pte, token: Path, tmp_path: Path) -> None:
    from edge_agent.runtimes.executorch_program import program_input
    from executorch.runtime import Runtime

    port, store = agent
    path = tmp_path / "tiny.pte"
    path.write_bytes(tiny_pte[0].read_bytes())
    # execute
    proc = _bench(port, token, path, "--json")
    too_big = _bench(port, token, path, "--batch-size", "4")
    # assert: the signature read from the FlatBuffer is the runtime's; the run is ExecuTorch's
    meta = Runtime.get().load_program(path.read_bytes()).metadata("forward").input_tensor_meta(0)
    assert program_input(path.read_bytes()) == ([int(s) for s in meta.sizes()], "float32")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [entry] = json.loads(proc.stdout)["data"]
    assert entry["state"] == "RUN_STATE_SUCCEEDED" and entry["result"]["runtime"] == "executorch", entry
    manifest = _stored_manifest(store, entry["sha256"])
    assert (manifest["format"], manifest["precision"]) == ("executorch", "fp32")
    assert manifest["input"]["shape"] == ["batch", 1, 28, 28] and "--precision" in manifest["source"]["precision_from"]
    assert too_big.returncode == 2, too_big.stdout + too_big.stderr
    assert "planned for batch 1" in _one_line(too_big.stderr)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _two_inputs(path: Path) -> Path:
    from onnx import TensorProto, helper

    a, b, c = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("a", "b", "c"))
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "g", [a, b], [c])
    return _write(path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())


def _integer_input(path: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    return _write(path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())


@pytest.mark.parametrize(
    ("case", "extra", "code", "named"),
    [
        ("text.onnx", [], 1, "not a valid protobuf"),
        ("garbage.pte", [], 1, "not an ExecuTorch program"),
        ("missing.onnx", [], 1, "no such file"),
        ("missing-folder", [], 1, "no such file or folder"),
        ("model.xml", [], 2, ".onnx or .pte or .tflite, not .xml"),
        ("model.tflite", [], 1, "not a LiteRT model"),
        ("hostile.onnx", [], 1, "external data"),
        ("two-inputs.onnx", [], 1, "2 inputs ('a', 'b')"),
        ("ids.onnx", [], 1, "input 'ids' is int64"),
        ("spatial", [], 2, "--input-shape"),
        ("spatial", ["--input-shape", "1x3xfoox32"], 2, "is not a shape"),
        ("spatial", ["--input-shape", "0x3x32x32"], 2, "from 1 to"),
        ("spatial", ["--input-shape", ""], 2, "is not a shape"),
        ("spatial", ["--input-shape", "1x3x32"], 2, "has 4 dimensions"),
        ("batch", ["--input-shape", "1x3x64x64"], 2, "dimension 2 is 32 in the file"),
        ("batch", ["--batch-size", "0"], 2, "batch_size"),
        ("folder", ["--input-shape", "1x1x28x28"], 2, "for model files"),
    ],
)
def test_bad_arguments_are_one_line_with_their_exit_code(
    files: dict[str, Path], tmp_path: Path, case: str, extra: list[str], code: int, named: str
) -> None:
    # setup: every case fails on the host, before any call (the device address answers nothing: reaching it is exit 7)
    paths = {
        "text.onnx": lambda p: _write(p, b"not a model\n"),
        "garbage.pte": lambda p: _write(p, b"\x00" * 64),
        "model.xml": lambda p: _write(p, b"<net/>"),
        "model.tflite": lambda p: _write(p, b"TFL3"),
        "hostile.onnx": lambda p: _write(p, (MALICIOUS / "constant_value_external.onnx").read_bytes()),
        "two-inputs.onnx": _two_inputs,
        "ids.onnx": _integer_input,
        "spatial": lambda p: files["spatial"],
        "batch": lambda p: files["batch"],
        "folder": lambda p: write_artifact(p, tiny_onnx_bytes()),
    }
    path = paths.get(case, lambda p: p)(tmp_path / case)
    # execute
    proc = _cli("bench", path, *extra, "--device", f"127.0.0.1:{_closed_port()}", "--timeout", "5")
    as_json = _cli("bench", path, *extra, "--device", f"127.0.0.1:{_closed_port()}", "--timeout", "5", "--json")
    # assert
    assert proc.returncode == code, proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith("edge-agent: error: ") and named in line, line
    envelope = json.loads(as_json.stdout)
    assert envelope["exit_code"] == code and envelope["status"] == "error" and named in envelope["errors"][0]["message"]


def test_the_host_reads_model_files_with_the_agent_extra_alone(files: dict[str, Path], tiny_pte) -> None:
    # torch, onnx, edge_opt and the ExecuTorch runtime cannot be imported: what a host with edge-opt[agent] has
    code = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "edge_opt", "executorch"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
from pathlib import Path
import edge_agent.cli, edge_agent.host.commands
from edge_agent.host.model_file import read_model_file
out = {}
for p in sys.argv[1:]:
    m = read_model_file(Path(p))
    out[Path(p).name] = [m.format, m.input.name, m.input.shape, m.input.dtype, m.precision]
print(json.dumps(out))
"""
    args = [files["spatial"], files["int8"], tiny_pte[0]]
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "cnn-spatial.onnx": ["onnx", "image", ["batch", 3, "height", "width"], "float32", "fp32"],
        "cnn-int8.onnx": ["onnx", "image", ["batch", 3, 32, 32], "float32", "int8"],
        "model.pte": ["executorch", "input", [1, 1, 28, 28], "float32", None],
    }


def test_the_evaluation_seam_runs_a_pushed_model_file_on_an_evaluation_set(agent, files: dict[str, Path], tmp_path: Path) -> None:
    # setup: a user's file staged and pushed as bench does, and an evaluation set as edge_opt.evalset.publish writes it
    import onnxruntime as ort
    from edge_agent.host.model_file import manifest_for, read_model_file, resolve_input, stage_model_file
    from edge_agent.host.session import bench_artifact
    from edge_opt import evalset

    port, _store = agent
    model = read_model_file(files["batch"])
    folder = stage_model_file(model, manifest_for(model, resolve_input(model, None, None), None), tmp_path / "staged")
    x = np.random.default_rng(5).standard_normal((40, 3, 32, 32)).astype(np.float32)
    host = ort.InferenceSession(str(files["batch"]), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    labels = host.argmax(1).astype(np.int64)
    inputs = evalset.publish(tmp_path / "out", {"inputs": x, "labels": labels}, {})
    reference = evalset.publish(tmp_path / "out", {"reference": host}, {})
    root = tmp_path / "out" / evalset.FOLDER
    seen = []
    # execute
    with client_for(port) as client:
        sha = client.push(folder).sha256
        last = bench_artifact(
            client, sha, FAST, eval_set=root / inputs["sha256"], eval_reference=root / reference["sha256"], on_event=seen.append
        )
        with pytest.raises(ValueError, match="not an evaluation set"):
            bench_artifact(client, sha, FAST, eval_set=folder)
    # assert: the device evaluated the file on the set, agreeing with the host
    evaluation = last["result"]["evaluation"]
    assert evaluation["samples"] == 40 and evaluation["top1_accuracy"] == 1.0 and evaluation["agreement_with_host"] == 1.0
    assert seen[-1] is last and len(seen) > 1


# ----- every artifact gets its result or its named failure ----------------------------------------------------


def test_a_refused_artifact_does_not_stop_the_others_and_every_result_is_kept(agent, token: Path, tmp_path: Path) -> None:
    # setup: an artifact the device refuses at push (a custom operator domain), then one it runs
    port, _store = agent
    custom = (MALICIOUS / "custom_domain_top.onnx").read_bytes()
    refused = write_artifact(tmp_path / "custom-op", custom, input_shape=["batch", 4])
    good = write_artifact(tmp_path / "tiny-onnx", tiny_onnx_bytes())
    # execute
    proc = _bench(port, token, refused, good, "--json")
    human = _bench(port, token, refused, good)
    # assert: exit 8 (partial), both entries in the JSON, the refusal named
    assert proc.returncode == 8, proc.stdout + proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["status"] == "partial" and envelope["exit_code"] == 8
    first, second = envelope["data"]
    assert first["artifact"] == str(refused) and first["state"] == "REFUSED" and first["error"]["code"] == "INVALID_ARGUMENT"
    assert second["artifact"] == str(good) and second["state"] == "RUN_STATE_SUCCEEDED" and "result" in second
    [error] = envelope["errors"]
    assert error["code"] == "INVALID_ARGUMENT" and error["message"].startswith(f"{refused}: ") and "custom" in error["message"]
    assert human.returncode == 8
    lines = human.stdout.splitlines()
    assert lines[0].startswith("custom-op: REFUSED INVALID_ARGUMENT") and lines[1].startswith("tiny-onnx: p50 ")


def test_an_artifact_whose_runtime_the_device_lacks_is_skipped_and_named(token_file: Path, token: Path, tmp_path: Path) -> None:
    # setup: a device without the ExecuTorch runtime (an executorch package without it shadows the installed one)
    shadow = tmp_path / "shadow" / "executorch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH", "")]))}
    program = b"\x1c\x00\x00\x00ET12" + bytes(56)  # never pushed: the host skips it
    pte = write_artifact(tmp_path / "tiny-executorch", program, fmt="executorch", input_shape=[1, 1, 28, 28])
    onnx = write_artifact(tmp_path / "tiny-onnx", tiny_onnx_bytes())
    # execute
    with AgentProcess(tmp_path / "store", token_file, env=env) as agent:
        with client_for(agent.port) as client:
            assert "executorch" not in [r["name"] for r in client.info()["runtimes"]]
        both = _bench(agent.port, token, pte, onnx, "--json")
        only = _bench(agent.port, token, pte, "--json")
        human = _bench(agent.port, token, pte, onnx)
        with client_for(agent.port) as client:
            stored = [a["name"] for a in client.list_artifacts()]
    # assert: the ONNX artifact ran, the .pte is named with the reason and the fix; running nothing is no success
    assert both.returncode == 0, both.stdout + both.stderr
    skipped, ran = json.loads(both.stdout)["data"]
    assert skipped["artifact"] == str(pte) and "no executorch runtime" in skipped["skipped"]
    assert "edge-opt[agent,executorch]" in skipped["skipped"] and "sha256" not in skipped
    assert ran["state"] == "RUN_STATE_SUCCEEDED"
    assert stored == ["tiny-onnx"]  # the .pte was never pushed
    assert only.returncode == 8, only.stdout + only.stderr
    [error] = json.loads(only.stdout)["errors"]
    assert error["code"] == "device-runtime" and "no executorch runtime" in error["message"]
    assert human.stdout.splitlines()[0].startswith("tiny-executorch: not run: the device has no executorch runtime")


def test_a_device_that_cannot_be_reached_names_every_artifact_and_exits_7(tmp_path: Path) -> None:
    first = write_artifact(tmp_path / "a-onnx", tiny_onnx_bytes())
    second = write_artifact(tmp_path / "b-onnx", tiny_onnx_bytes(8))
    proc = _cli("bench", first, second, "--device", f"127.0.0.1:{_closed_port()}", "--timeout", "5", "--json")
    assert proc.returncode == 7, proc.stdout + proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["status"] == "error" and envelope["exit_code"] == 7
    assert [(e["artifact"], e["state"], e["error"]["code"]) for e in envelope["data"]] == [
        (str(first), "NOT_RUN", "UNAVAILABLE"),
        (str(second), "NOT_RUN", "UNAVAILABLE"),
    ]
    assert len(envelope["errors"]) == 2 and "UNAVAILABLE" in _one_line(proc.stderr)


@pytest.mark.parametrize("command", ["bench", "push"])
def test_a_malformed_manifest_is_one_line_naming_the_file(tmp_path: Path, command: str) -> None:
    folder = write_artifact(tmp_path / "art", tiny_onnx_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["file"]["size_bytes"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    proc = _cli(command, folder, "--device", f"127.0.0.1:{_closed_port()}", "--timeout", "5")
    assert proc.returncode == 1, proc.stderr
    line = _one_line(proc.stderr)
    assert str(folder / "manifest.json") in line and "file.size_bytes" in line, line
