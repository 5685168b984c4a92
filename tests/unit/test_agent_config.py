"""``edge-agent serve --config FILE``: the flags' names as TOML keys, typed; flags win; old names still read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from edge_agent.cli import build_parser, main
from edge_agent.config import AgentConfig, agent_config
from edge_agent.contract.result import EXIT_USAGE
from edge_agent.service.server import run_server

pytestmark = pytest.mark.unit


def _config(tmp_path: Path, toml: str, *flags: str):
    path = tmp_path / "agent.toml"
    path.write_text(toml)
    config = agent_config(build_parser().parse_args(["check-config", "--config", str(path), *flags]))
    config.check()
    return config


def test_the_keys_are_the_flags_names_and_flags_win(tmp_path: Path) -> None:
    toml = f'store = "{tmp_path / "s"}"\ngrace = 12\nmemory_limit_mb = 768\nkeep_runs = 50\nquota_mb = 100\n'
    config = _config(tmp_path, toml, "--grace", "3")
    assert config.grace_seconds == 3.0 and config.memory_limit_bytes == 768 << 20 and config.keep_runs == 50
    assert config.limits.quota_bytes == 100 << 20 and config.store == (tmp_path / "s").resolve()


def test_the_example_file_and_keys_of_earlier_versions_are_read(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "agent.example.toml"
    text = example.read_text().replace('token_file = "~/.edge-agent-token"', "")
    assert _config(tmp_path, text).keep_runs >= 1
    old = _config(tmp_path, f'store = "{tmp_path}"\ngrace_seconds = 30\nmemory_limit_bytes = {768 << 20}\n')
    assert old.grace_seconds == 30 and old.memory_limit_bytes == 768 << 20


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('max_queue = "lots"', "'max_queue' must be int"),
        ('store = ""', "'store' must be a path"),
        ("insecure = 1", "'insecure' must be bool"),
        ("quota_mb = -5", "quota_mb (--quota-mb) must be 1 to 16777216 MB, got -5"),
        ("max_artifact_mb = 0", "max_artifact_mb (--max-artifact-mb) must be 1 to 16777216 MB, got 0"),
        ("memory_limit_mb = -1", "memory_limit_mb (--memory-limit-mb) must be 0 (no limit) to 16777216 MB, got -1"),
        ("keep_runs = 0", "keep_runs (--keep-runs) must be at least 1"),
        ("grace_secs = 3", "unknown config key(s) grace_secs"),
    ],
)
def test_wrong_keys_and_values_are_named(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(ValueError, match=None) as refused:
        _config(tmp_path, f'store = "{tmp_path / "s"}"\n' + toml if not toml.startswith("store") else toml)
    assert named in str(refused.value)


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("grace = inf", "grace (--grace) must be 0 to 86400"),
        ("idle_timeout = nan", "idle_timeout (--idle-timeout) must be more than 0"),
        ('worker_python = "/no/such/python"', "worker_python '/no/such/python' is not an executable"),
        ('token_file = ""', "'token_file' must be a path"),
    ],
)
def test_values_that_would_break_the_daemon_later_are_refused_now(tmp_path: Path, toml: str, named: str) -> None:
    # --grace inf once passed check-config and crashed the shutdown (OverflowError, exit 1).
    with pytest.raises(ValueError) as refused:
        _config(tmp_path, f'store = "{tmp_path / "s"}"\n{toml}\n')
    assert named in str(refused.value)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-artifact-mb", "-1"], "max_artifact_mb (--max-artifact-mb) must be 1 to 16777216 MB, got -1\n"),
        (["--quota-mb", "-3"], "quota_mb (--quota-mb) must be 1 to 16777216 MB, got -3\n"),
        (["--quota-mb", "4294967296"], "quota_mb (--quota-mb) must be 1 to 16777216 MB, got 4294967296\n"),  # bytes, by mistake
        (["--memory-limit-mb", "-2"], "memory_limit_mb (--memory-limit-mb) must be 0 (no limit) to 16777216 MB, got -2\n"),
    ],
)
def test_sizes_in_mb_are_reported_as_given_with_their_range(tmp_path: Path, capsys, flags: list[str], named: str) -> None:
    # These used to say "got -1048576" under an MB label: the bytes the value had been converted to.
    assert main(["check-config", "--store", str(tmp_path / "s"), *flags]) == EXIT_USAGE
    assert capsys.readouterr().err == f"edge-agent: error: {named}"
    assert main(["check-config", "--store", str(tmp_path / "s"), flags[0], "16777216"]) == 0


def test_the_worker_python_variable_is_validated_like_the_key(tmp_path: Path, monkeypatch, capsys) -> None:
    store = f'store = "{tmp_path / "s"}"\n'
    not_executable = tmp_path / "python"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    for value, named in (
        ("/no/such/python", "EDGE_AGENT_WORKER_PYTHON '/no/such/python' is not an executable"),
        (str(not_executable), f"EDGE_AGENT_WORKER_PYTHON '{not_executable}' is not an executable"),
        (str(tmp_path), f"EDGE_AGENT_WORKER_PYTHON '{tmp_path}' is not an executable"),
        ("", "EDGE_AGENT_WORKER_PYTHON must be a non-empty string"),
    ):
        monkeypatch.setenv("EDGE_AGENT_WORKER_PYTHON", value)
        with pytest.raises(ValueError) as refused:
            _config(tmp_path, store)
        assert named in str(refused.value)
        assert main(["check-config", "--store", str(tmp_path / "s")]) == EXIT_USAGE
        assert named in capsys.readouterr().err
    # The key (or flag) names the interpreter when given: the variable is not used, so not checked.
    assert _config(tmp_path, store + f'worker_python = "{sys.executable}"\n').worker_interpreter() == (
        sys.executable,
        "worker_python",
    )
    monkeypatch.setenv("EDGE_AGENT_WORKER_PYTHON", sys.executable)
    assert _config(tmp_path, store).worker_interpreter() == (sys.executable, "EDGE_AGENT_WORKER_PYTHON")


def test_a_bad_worker_python_variable_stops_the_agent_at_start(tmp_path: Path, token_file: Path, monkeypatch) -> None:
    env = {**os.environ, "EDGE_AGENT_WORKER_PYTHON": "/no/such/python"}
    serve = [sys.executable, "-m", "edge_agent.cli", "serve", "--listen", "127.0.0.1:0", "--store", str(tmp_path / "s")]
    proc = subprocess.run(
        [*serve, "--token-file", str(token_file)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == EXIT_USAGE and "serving on" not in proc.stdout
    assert "EDGE_AGENT_WORKER_PYTHON '/no/such/python' is not an executable" in proc.stderr
    # An agent started in-process reads the same variable through the same check.
    monkeypatch.setenv("EDGE_AGENT_WORKER_PYTHON", "/no/such/python")
    config = AgentConfig(listen="127.0.0.1:0", store=tmp_path / "s", token_file=token_file)
    refused = pytest.raises(ValueError, match="EDGE_AGENT_WORKER_PYTHON '/no/such/python' is not an executable")
    with refused, run_server(config):
        pass
