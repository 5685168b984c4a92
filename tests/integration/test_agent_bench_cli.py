"""``edge-agent bench`` from the command line against a real agent on 127.0.0.1: each artifact gets its result or
its named failure; bad arguments are one line and the right exit code, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from agent_helpers import TOKEN, AgentProcess, client_for, tiny_onnx_bytes, write_artifact
from conftest import REPO

pytestmark = pytest.mark.integration

MALICIOUS = REPO / "tests" / "data" / "malicious_onnx"
QUICK = ["--iterations", "5", "--min-seconds", "0.01", "--warmup-runs", "1", "--warmup-seconds", "0.01"]


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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
