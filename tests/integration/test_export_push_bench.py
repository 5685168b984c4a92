"""The user's two terminals: an agent serving, and ``edge-export ... --push HOST:PORT --bench`` on the host."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import AgentProcess, client_for
from conftest import parse_json_result, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.cpus
def test_export_push_bench_end_to_end(tmp_path: Path, token_file: Path, cli_env: dict[str, str]) -> None:
    token = token_file
    with AgentProcess(tmp_path / "store", token) as agent:
        port = agent.port
        args = [
            "--precision",
            "int8",
            "--out",
            str(tmp_path / "art"),
            "--push",
            f"127.0.0.1:{port}",
            "--token-file",
            str(token),
            "--bench",
            "--device-iterations",
            "20",
            "--json",
            "-q",
        ]
        proc = run_cli(args, cli_env)
        assert proc.returncode == 0, proc.stderr
        result = parse_json_result(proc.stdout)
        runs = result["data"]["device"]["runs"]
        assert {r["format"] for r in runs} == {"onnx", "torchscript"}
        for run in runs:
            assert run["state"] == "RUN_STATE_SUCCEEDED", run
            assert run["result"]["latency"]["count"] >= 20
            # The device evaluated the 1,000 images pushed with the artifact, after timing, and agrees with the host:
            # the device is this host, so the export used the host's kernels, which the device runs too.
            check = run["device_check"]
            assert check["samples"] == 1000 and not check["error"] and check["flags"] == []
            assert check["agreement_with_host"] == 1.0 and check["max_abs_diff"] < 1e-4
            assert check["top1_accuracy"] == pytest.approx(check["host_accuracy"], abs=1e-9)
            assert check["top1_accuracy"] > 0.85
            assert run["sha256"] == next(
                a["sha256"] for a in result["data"]["artifacts"] if a["path"] and a["format"] == run["format"]
            )
        kept = list((tmp_path / "art" / "device-runs").rglob("*.json"))
        assert len(kept) == 2  # results also kept as files on the host
        evalsets = [a for a in agent_artifacts(port, token) if a["format"] == "evalset"]
        assert len(evalsets) == 3  # the images once, a reference per artifact
        # A second export pushes only what changed: the ONNX bytes are identical (TorchScript zips are not).
        again = run_cli(
            [
                "--precision",
                "int8",
                "--out",
                str(tmp_path / "art"),
                "--push",
                f"127.0.0.1:{port}",
                "--token-file",
                str(token),
                "--json",
                "-q",
            ],
            cli_env,
        )
        assert again.returncode == 0, again.stderr
        pushes = [r["push"] for r in parse_json_result(again.stdout)["data"]["device"]["runs"]]
        assert any(p["already_present"] for p in pushes)  # the ONNX bytes are identical across exports


def test_a_failed_device_run_fails_the_command(tmp_path: Path, token_file: Path, cli_env: dict[str, str]) -> None:
    # A bad day on the device: its benchmark workers may use 64 MB of address space, too little for ONNX Runtime.
    # The export is written and kept, the device's error is shown, and the command exits 8 ("partial"), not 0.
    with AgentProcess(tmp_path / "store", token_file, args=("--memory-limit-mb", "64")) as agent:
        args = ["--target", "host", "--precision", "fp32", "--format", "onnx", "--eval-samples", "200"]
        args += ["--out", str(tmp_path / "art"), "--push", f"127.0.0.1:{agent.port}", "--token-file", str(token_file)]
        proc = run_cli([*args, "--bench", "--device-iterations", "5", "--json", "-q"], cli_env)
        assert proc.returncode == 8, proc.stderr
        result = parse_json_result(proc.stdout)
        assert result["status"] == "partial" and result["exit_code"] == 8
        [run] = result["data"]["device"]["runs"]
        assert "result" not in run and run["state"] == "RUN_STATE_FAILED", run
        [error] = result["errors"]
        assert error["code"] == "device-run" and error["message"].startswith("smallcnn-fp32-onnx: the device run ended FAILED")
        assert "edge-export: device-run: smallcnn-fp32-onnx: the device run ended FAILED" in proc.stderr
        assert (tmp_path / "art" / "smallcnn-fp32-onnx" / "manifest.json").is_file()
        # Pushing without --bench runs nothing on the device, so nothing can fail there: exit 0.
        again = run_cli([*args, "-q"], cli_env)
        assert again.returncode == 0, again.stderr


def agent_artifacts(port: int, token: Path) -> list[dict]:
    with client_for(port, token.read_text().strip()) as client:
        return client.list_artifacts()


def test_bench_without_push_is_a_usage_error(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = run_cli(["--bench", "--out", str(tmp_path / "o")], cli_env)
    assert proc.returncode == 2 and "--push" in proc.stderr


def test_unreachable_device_fails_before_the_export(tmp_path: Path, cli_env: dict[str, str]) -> None:
    # Without --target the device is asked for its target first: a dead device fails fast, nothing is exported.
    proc = run_cli(["--out", str(tmp_path / "o"), "--push", "127.0.0.1:1", "-q"], cli_env)
    assert proc.returncode == 7
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "UNAVAILABLE" in lines[0]
    assert not (tmp_path / "o").exists()


def test_unreachable_device_after_export_keeps_the_export(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = run_cli(
        [
            "--target",
            "host",
            "--precision",
            "fp32",
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "o"),
            "--push",
            "127.0.0.1:1",
            "--eval-samples",
            "200",
            "-q",
        ],
        cli_env,
    )
    assert proc.returncode == 7
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "UNAVAILABLE" in lines[0]
    assert (tmp_path / "o" / "smallcnn-fp32-onnx" / "manifest.json").is_file()  # the export itself is kept
