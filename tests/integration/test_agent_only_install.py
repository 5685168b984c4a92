"""The agent installs and runs with the ``agent`` extra alone, in a fresh venv without torch (what a Pi gets)."""

from __future__ import annotations

import io
import subprocess
import venv
from pathlib import Path

import pytest
import torch
from agent_helpers import FAST, TOKEN, AgentProcess, client_for, tiny_onnx_bytes, write_artifact
from conftest import REPO
from edge_agent.client import DeviceCallError

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


def test_agent_venv_has_no_torch_and_imports_stay_light(agent_python: str) -> None:
    code = (
        "import importlib.util, sys\n"
        "import edge_agent.server, edge_agent.runs, edge_agent.worker, edge_agent.client, edge_agent.cli\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
        "assert importlib.util.find_spec('edge_opt') is not None  # the same distribution, unused on the device\n"
        "assert not any(m.split('.')[0] in ('torch', 'edge_opt') for m in sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([agent_python, "-c", code], check=True, timeout=120, cwd="/")


def test_agent_serves_onnx_and_refuses_torchscript_without_torch(agent_python: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    agent = AgentProcess(tmp_path / "store", token, python=agent_python, env={"PYTHONPATH": ""})
    try:
        port = agent.start()
        with client_for(port) as client:
            info = client.info()
            assert [r["name"] for r in info["runtimes"]] == ["onnxruntime"]
            onnx_sha = client.push(write_artifact(tmp_path / "onnx", tiny_onnx_bytes())).sha256
            assert "result" in list(client.bench(onnx_sha, FAST))[-1]
            buffer = io.BytesIO()
            torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), buffer)
            ts = write_artifact(tmp_path / "ts", buffer.getvalue(), fmt="torchscript", input_shape=["batch", 4])
            ts_sha = client.push(ts).sha256
            with pytest.raises(DeviceCallError) as err:
                list(client.bench(ts_sha, FAST))
            assert err.value.code == "FAILED_PRECONDITION" and "torch" in err.value.details
    finally:
        agent.close()


def test_console_script_help(agent_python: str) -> None:
    script = Path(agent_python).parent / "edge-agent"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "serve" in proc.stdout and "edge-agent serve" in proc.stdout


def test_agent_without_executorch_refuses_a_pte_with_the_fix(agent_python: str, tmp_path: Path) -> None:
    # setup: a real .pte, built here (the host has the executorch extra; the agent's venv has not)
    from edge_opt.executorch_export import export_pte
    from edge_test_models import tiny

    pte = tmp_path / "model.pte"
    export_pte(tiny().eval(), torch.randn(1, 1, 28, 28), pte, max_batch=1)
    artifact = write_artifact(tmp_path / "pte", pte.read_bytes(), fmt="executorch", input_shape=[1, 1, 28, 28])
    token = tmp_path / "token"
    token.write_text(TOKEN)
    agent = AgentProcess(tmp_path / "store", token, python=agent_python, env={"PYTHONPATH": ""})
    try:
        port = agent.start()
        with client_for(port) as client:
            # execute
            names = [r["name"] for r in client.info()["runtimes"]]
            sha = client.push(artifact).sha256  # stored: the file is a program, only the runtime is missing
            with pytest.raises(DeviceCallError) as err:
                list(client.bench(sha, FAST))
        # assert
        assert "executorch" not in names
        assert err.value.code == "FAILED_PRECONDITION"
        assert "ExecuTorch runtime" in err.value.details and "edge-opt[agent,executorch]" in err.value.details
    finally:
        agent.close()
