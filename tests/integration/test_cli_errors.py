"""Bad input: one clear line on stderr, a non-zero exit, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import parse_json_result, run_cli

pytestmark = pytest.mark.integration


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_unknown_precision(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = run_cli(["--precision", "int9", "--out", str(tmp_path / "o")], cli_env)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert "int9" in line and "fp32" in line and "int8" in line
    assert not (tmp_path / "o").exists()


def test_config_typo(tmp_path: Path, cli_env: dict[str, str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("calibraton_batches: 16\n")
    proc = run_cli(["--config", str(config), "--out", str(tmp_path / "o")], cli_env)
    assert proc.returncode == 2
    assert "calibraton_batches" in _one_line(proc.stderr)


def test_missing_dataset(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = run_cli(["--data-dir", str(tmp_path / "nodata"), "--no-download", "--out", str(tmp_path / "o")], cli_env)
    assert proc.returncode == 3
    line = _one_line(proc.stderr)
    assert "Fashion-MNIST not found" in line and "--data-dir" in line
    assert not (tmp_path / "o").exists()


def test_unknown_target_json_error(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = run_cli(["--target", "riscv", "--json", "--out", str(tmp_path / "o")], cli_env)
    assert proc.returncode == 2
    result = parse_json_result(proc.stdout)
    assert result["status"] == "error" and result["errors"][0]["code"] == "config"
    assert "riscv" in result["errors"][0]["message"]


def test_help_has_examples(cli_env: dict[str, str]) -> None:
    proc = run_cli(["--help"], cli_env)
    assert proc.returncode == 0
    assert "edge-export --precision int8" in proc.stdout and "EDGE_OPT_DATA_DIR" in proc.stdout


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--pick-rounds", "0"], "--pick-rounds"),
        (["--max-accuracy-drop", "-1"], "--max-accuracy-drop"),
        (["--max-accuracy-drop", "nan"], "--max-accuracy-drop"),
        (["--device-threads", "0"], "threads"),
    ],
)
def test_bad_device_flags_are_refused_before_any_work(tmp_path: Path, cli_env: dict[str, str], flags, named) -> None:
    proc = run_cli([*flags, "--push", "127.0.0.1:1", "--pick", "--out", str(tmp_path / "o")], cli_env)
    assert proc.returncode == 2, proc.stderr
    assert named in _one_line(proc.stderr)
    assert not (tmp_path / "o").exists()


def test_fleet_bench_settings_are_checked_against_the_agents_bounds(tmp_path: Path, cli_env: dict[str, str]) -> None:
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text("devices:\n  - {name: a, address: '127.0.0.1:1'}\n")
    folder = tmp_path / "art"
    proc = run_cli(["bench", "--inventory", str(inventory), str(folder), "--threads", "0"], cli_env, module="edge_opt.fleet.cli")
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert "threads" in line and "1" in line


def test_a_missing_token_file_is_a_usage_error_before_the_export(tmp_path: Path, cli_env: dict[str, str]) -> None:
    args = ["--target", "x86_64", "--push", "127.0.0.1:1", "--token-file", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    proc = run_cli(args, cli_env)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert "--token-file" in line and "no such file" in line
    assert not (tmp_path / "o").exists()
