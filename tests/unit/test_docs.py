"""The README and docs/: the README stays short and keeps CI's three commands, and every flag the docs use exists."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# docs/commands.md is the parsers' own --help (generated), so its flags are theirs by construction.
DOC_FILES = [README, *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "commands.md")]

# The three commands CI runs (.ci/run), in the README as a newcomer types them.
CI_COMMANDS = [
    'python3 -m venv .venv && .venv/bin/pip install --upgrade pip && .venv/bin/pip install -e ".[dev]"',
    "EDGE_OPT_DATA_DIR=../shared/datasets .venv/bin/edge-export --precision int8",
    "EDGE_OPT_DATA_DIR=../shared/datasets .venv/bin/python -m pytest",
]
# As .ci/run spells them: the main job and the tests appear once in the README too.
CI_RUN_FORMS = [".venv/bin/edge-export --precision int8", ".venv/bin/python -m pytest"]

COMMANDS = ("edge-export", "edge-sweep", "edge-agent", "edge-fleet")
MENTION = re.compile(r"(?<![\w/.-])(?:\.venv/bin/)?(edge-export|edge-sweep|edge-agent|edge-fleet)(?![\w-])")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def parsers() -> dict[str, argparse.ArgumentParser]:
    from edge_agent.cli import build_parser as agent_parser
    from edge_opt.cli.export import build_parser as export_parser
    from edge_opt.cli.sweep import build_parser as sweep_parser
    from edge_opt.fleet.cli import build_parser as fleet_parser

    return {
        "edge-export": export_parser(),
        "edge-sweep": sweep_parser(),
        "edge-agent": agent_parser(),
        "edge-fleet": fleet_parser(),
    }


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def flags_by_command() -> list[tuple[str, int, str, str | None, str]]:
    """(file, line, command, subcommand or None, flag) for every --flag after a command on the same line.

    A line's text after a command runs to the next command named on it, so each flag is judged by the nearest
    command before it."""
    found = []
    for path in DOC_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            mentions = list(MENTION.finditer(line))
            for i, mention in enumerate(mentions):
                end = mentions[i + 1].start() if i + 1 < len(mentions) else len(line)
                rest = line[mention.end() : end]
                sub = None
                word = re.match(r"[\s`]*([a-z][a-z-]*)", rest)
                if mention.group(1) in ("edge-agent", "edge-fleet") and word:
                    sub = word.group(1)
                for flag in FLAG.findall(rest):
                    found.append((path.name, number, mention.group(1), sub, flag))
    return found


def test_readme_is_at_most_16_kb() -> None:
    assert README.stat().st_size <= 16 * 1024, f"README.md is {README.stat().st_size} bytes; the limit is 16 KB"


@pytest.mark.parametrize("command", CI_COMMANDS + CI_RUN_FORMS)
def test_readme_has_each_ci_command_once(command: str) -> None:
    assert README.read_text().count(command) == 1, command


def test_ci_runs_the_readme_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    for form in CI_RUN_FORMS:
        assert form in ci, form


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the toolchain's parsers need the toolchain extra")
def test_every_documented_flag_exists() -> None:
    known = parsers()
    unknown = []
    for name, number, command, sub, flag in flags_by_command():
        parser = known[command]
        subs = subcommands(parser)
        if sub in subs:
            allowed = options(parser) | options(subs[sub])
        else:  # no subcommand named: the flag must belong to the command or one of its subcommands
            allowed = options(parser).union(*(options(p) for p in subs.values()))
        if flag not in allowed:
            unknown.append(f"{name}:{number}: {command}{' ' + sub if sub else ''} {flag}")
    assert not unknown, "flags the docs use that the command does not have:\n" + "\n".join(unknown)


def test_the_flag_scan_sees_flags() -> None:
    seen = {(command, flag) for _, _, command, _, flag in flags_by_command()}
    assert ("edge-export", "--precision") in seen and ("edge-agent", "--token-file") in seen


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the toolchain's parsers need the toolchain extra")
def test_commands_reference_is_fresh() -> None:
    spec = importlib.util.spec_from_file_location("gen_cli_reference", ROOT / "docs" / "gen_cli_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "docs/commands.md is stale: run .venv/bin/python docs/gen_cli_reference.py"
