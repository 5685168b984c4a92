"""The agent as a real subprocess, killed and restarted: nothing acknowledged is lost, nothing runs twice."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from agent_helpers import FAST, TOKEN, AgentProcess, audit_store, client_for, tiny_onnx_bytes, wait_for, write_artifact
from edge_agent.host.client import DeviceCallError

pytestmark = pytest.mark.fault


def test_agent_killed_mid_benchmark_reports_interrupted_and_keeps_everything(tmp_path: Path, token_file: Path) -> None:
    store = tmp_path / "store"
    agent = AgentProcess(store, token_file)
    try:
        port = agent.start()
        data = tiny_onnx_bytes()
        folder = write_artifact(tmp_path / "a", data)
        with client_for(port) as client:
            sha = client.push(folder).sha256
            done = list(client.bench(sha, FAST, run_id="before"))[-1]
            assert "result" in done
            forever = {"iterations": 10**6, "min_seconds": 600, "timeout_seconds": 900}
            stream = client.bench(sha, forever, run_id="long")
            for event in stream:  # wait until the worker is measuring, then pull the plug
                if "progress" in event and event["progress"]["phase"] == "measuring":
                    break
        agent.kill()
        port = agent.start()
        with client_for(port) as client:
            long_run = client.get_run("long")
            assert long_run["state"] == "RUN_STATE_INTERRUPTED" and long_run["error"]["code"] == "INTERRUPTED"
            before = client.get_run("before")
            assert before["state"] == "RUN_STATE_SUCCEEDED"
            assert before["result"]["latency"]["p50_ms"] == done["result"]["latency"]["p50_ms"]
            replay = list(client.bench(sha, forever, run_id="long"))  # never silently re-run
            assert len(replay) == 1 and replay[0]["state"] == "RUN_STATE_INTERRUPTED"
            assert client.push(folder).already_present
        audit_store(store, {sha: data})
    finally:
        agent.close()


def test_client_killed_mid_push_resumes_without_resending(tmp_path: Path, token_file: Path) -> None:
    store = tmp_path / "store"
    agent = AgentProcess(store, token_file)
    try:
        port = agent.start()
        data = bytes(tiny_onnx_bytes(4096))  # ~13 MB: many 1 MiB chunks
        folder = write_artifact(tmp_path / "a", data)
        sha = hashlib.sha256(data).hexdigest()
        script = (
            "import os, sys\n"
            "from pathlib import Path\n"
            "from agent_helpers import client_for\n"
            "def progress(done, total):\n"
            "    if done >= total // 2:\n"
            "        os.kill(os.getpid(), 9)\n"
            f"client_for({port}).push(Path({str(folder)!r}), on_progress=progress)\n"
        )
        env = {**agent.env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60, check=False)
        assert killed.returncode == -signal.SIGKILL
        with client_for(port) as client:
            wait_for(
                lambda: (
                    client.stub.StatArtifact(
                        __import__("edge_agent.v1.agent_pb2", fromlist=["x"]).StatArtifactRequest(sha256=sha),
                        timeout=5,
                        metadata=client._metadata,
                    ).staged_bytes
                    > 0
                )
            )
            outcome = client.push(folder)
            assert 0 < outcome.resumed_from < len(data)
            assert outcome.bytes_sent == len(data) - outcome.resumed_from
            assert client.push(folder).already_present
        audit_store(store, {sha: data})
    finally:
        agent.close()


def test_insecure_bind_is_refused_without_tls(tmp_path: Path, token_file: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--store",
            str(tmp_path / "s"),
            "--token-file",
            str(token_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0:0 without TLS" in proc.stderr and "--insecure" in proc.stderr


def test_token_never_logged(tmp_path: Path, token_file: Path) -> None:
    agent = AgentProcess(tmp_path / "store", token_file)
    try:
        port = agent.start()
        with client_for(port) as client, client_for(port, token="wrong-token-but-long-enough") as bad:
            client.push(write_artifact(tmp_path / "a", tiny_onnx_bytes()))
            with pytest.raises(DeviceCallError):
                bad.list_artifacts()
        agent.terminate()
        output = agent.proc.stdout.read() + agent.proc.stderr.read()
        assert TOKEN not in output and "wrong-token" not in output
        assert "committed artifact" in output  # the log is there, the secret is not
    finally:
        agent.close()


def test_journal_is_valid_json_lines(tmp_path: Path, token_file: Path) -> None:
    agent = AgentProcess(tmp_path / "store", token_file)
    try:
        port = agent.start()
        with client_for(port) as client:
            sha = client.push(write_artifact(tmp_path / "a", tiny_onnx_bytes())).sha256
            for i in range(3):
                list(client.bench(sha, FAST, run_id=f"r{i}"))
        lines = (tmp_path / "store" / "runs" / "journal.jsonl").read_text().splitlines()
        assert [json.loads(line)["event"] for line in lines].count("finished") == 3
    finally:
        agent.close()
