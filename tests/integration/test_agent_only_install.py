"""The agent installs and runs with the ``agent`` extra alone, in a fresh venv without torch (what a Pi gets)."""

from __future__ import annotations

import io
import json
import subprocess
import venv
from pathlib import Path

import pytest
import torch
import yaml
from agent_helpers import FAST, AgentProcess, client_for, tiny_onnx_bytes, write_artifact
from conftest import REPO, parse_json_result, run_cli
from edge_agent.host.client import DeviceCallError

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def agent_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("agent-venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    python = str(root / "bin" / "python")
    # A regular (non-editable) install from the repository, exactly what `pip install edge-opt[agent]` does.
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", f"{REPO}[agent]"], check=True, timeout=900, cwd=root, capture_output=True
    )
    return python


@pytest.fixture
def agent_only(agent_python: str, token_file: Path, tmp_path: Path):
    """An agent run by the agent-only venv's Python (nothing from this checkout on its path): yields its port."""
    agent = AgentProcess(tmp_path / "store", token_file, python=agent_python, env={"PYTHONPATH": ""})
    try:
        yield agent.start()
    finally:
        agent.close()


def test_agent_venv_has_no_torch_and_imports_stay_light(agent_python: str) -> None:
    code = (
        "import importlib.util, sys\n"
        "import edge_agent.service.server, edge_agent.runs.manager, edge_agent.worker.main\n"
        "import edge_agent.host.client, edge_agent.cli\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
        "assert importlib.util.find_spec('edge_opt') is not None  # the same distribution, unused on the device\n"
        "assert not any(m.split('.')[0] in ('torch', 'edge_opt') for m in sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([agent_python, "-c", code], check=True, timeout=120, cwd="/")


def test_agent_serves_onnx_and_refuses_torchscript_without_torch(agent_only: int, tmp_path: Path) -> None:
    with client_for(agent_only) as client:
        info = client.info()
        assert [r["name"] for r in info["runtimes"]] == ["onnxruntime", "ai-edge-litert"]
        onnx_sha = client.push(write_artifact(tmp_path / "onnx", tiny_onnx_bytes())).sha256
        assert "result" in list(client.bench(onnx_sha, FAST))[-1]
        ts_sha = client.push(_torchscript_artifact(tmp_path / "ts")).sha256
        with pytest.raises(DeviceCallError) as err:
            list(client.bench(ts_sha, FAST))
        assert err.value.code == "FAILED_PRECONDITION" and "torch" in err.value.details


def test_console_script_help(agent_python: str) -> None:
    script = Path(agent_python).parent / "edge-agent"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "serve" in proc.stdout and "edge-agent serve" in proc.stdout


def test_agent_without_executorch_refuses_a_pte_with_the_fix(agent_only: int, tiny_pte, tmp_path: Path) -> None:
    # setup: a real .pte, built here (the host has the executorch extra; the agent's venv has not)
    artifact = write_artifact(tmp_path / "pte", tiny_pte[0].read_bytes(), fmt="executorch", input_shape=[1, 1, 28, 28])
    with client_for(agent_only) as client:
        # execute
        names = [r["name"] for r in client.info()["runtimes"]]
        sha = client.push(artifact).sha256  # stored: the file is a program, only the runtime is missing
        with pytest.raises(DeviceCallError) as err:
            list(client.bench(sha, FAST))
    # assert
    assert "executorch" not in names
    assert err.value.code == "FAILED_PRECONDITION"
    assert "ExecuTorch runtime" in err.value.details and "edge-opt[agent,executorch]" in err.value.details


def _torchscript_artifact(folder: Path) -> Path:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), buffer)
    return write_artifact(folder, buffer.getvalue(), fmt="torchscript", input_shape=["batch", 4])


def test_fleet_bench_on_a_torch_free_device_runs_what_it_can_and_names_the_rest(
    agent_only: int, token_file: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # setup: an ONNX and a TorchScript artifact; the device (the agent-only venv) has no torch
    export = tmp_path / "export"
    write_artifact(export / "tiny-onnx", tiny_onnx_bytes())
    _torchscript_artifact(export / "linear-torchscript")
    inventory = tmp_path / "fleet.yaml"
    device = {"name": "pi", "address": f"127.0.0.1:{agent_only}"}
    inventory.write_text(yaml.safe_dump({"defaults": {"token_file": str(token_file)}, "devices": [device]}))
    common = ["bench", "--inventory", str(inventory), "--db", str(tmp_path / "r.sqlite"), "--iterations", "5", "--json", "-q"]
    # execute
    both = run_cli([*common, str(export)], cli_env, module="edge_opt.fleet.cli")
    only_ts = run_cli([*common, str(export / "linear-torchscript")], cli_env, module="edge_opt.fleet.cli")
    # assert: the ONNX artifact ran, the TorchScript one is named with the reason and the fix, and that is no failure
    assert both.returncode == 0, both.stdout + both.stderr
    [outcome] = parse_json_result(both.stdout)["data"]["devices"]
    assert outcome["succeeded"] == 1 and outcome["failed"] == 0
    assert [r["artifact"] for r in outcome["runs"]] == ["tiny-onnx"]
    assert "no torch runtime" in outcome["skipped"]["linear-torchscript"]
    assert "install torch" in outcome["skipped"]["linear-torchscript"]
    # ... but a collection in which the device can run nothing is not a success
    assert only_ts.returncode == 8, only_ts.stdout + only_ts.stderr
    [error] = parse_json_result(only_ts.stdout)["errors"]
    assert error["code"] == "device-runtime" and "no torch runtime" in error["message"]


def test_export_push_bench_to_a_torch_free_device_benchmarks_the_onnx_artifact(
    agent_only: int, token_file: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # The default formats are TorchScript and ONNX; the device is installed as the README's Pi (no torch).
    args = ["--precision", "fp32", "--eval-samples", "200", "--out", str(tmp_path / "art")]
    args += ["--push", f"127.0.0.1:{agent_only}", "--token-file", str(token_file), "--bench", "--device-iterations", "5"]
    proc = run_cli([*args, "--json", "-q"], cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = parse_json_result(proc.stdout)
    runs = {r["format"]: r for r in result["data"]["device"]["runs"]}
    assert runs["onnx"]["state"] == "RUN_STATE_SUCCEEDED" and runs["onnx"]["device_check"]["samples"] > 0
    assert "push" not in runs["torchscript"] and "no torch runtime" in runs["torchscript"]["skipped"]
    # summary.json holds what --json printed, device runs included
    assert json.loads((tmp_path / "art" / "summary.json").read_text()) == result["data"]


def test_torch_free_device_benchmarks_and_evaluates_litert_artifacts(
    agent_only: int, agent_python: str, token_file: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # setup: the device lists LiteRT (ai-edge-litert comes with the agent extra, without torch)
    with client_for(agent_only) as client:
        litert = next(r for r in client.info()["runtimes"] if r["name"] == "ai-edge-litert")
    assert litert["version"] and "XNNPACK" in litert["providers"]
    # execute: FP32 and INT8 .tflite exported here, pushed, benchmarked and checked on the device's evaluation set
    args = ["--precision", "fp32,int8", "--format", "litert", "--eval-samples", "200", "--out", str(tmp_path / "art")]
    args += ["--push", f"127.0.0.1:{agent_only}", "--token-file", str(token_file), "--bench", "--device-iterations", "5"]
    proc = run_cli([*args, "--json", "-q"], cli_env)
    # assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = {(r["precision"], r["format"]): r for r in parse_json_result(proc.stdout)["data"]["device"]["runs"]}
    assert set(runs) == {("fp32", "litert"), ("int8", "litert")}
    for run in runs.values():
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        assert run["device_check"]["samples"] == 200, run
