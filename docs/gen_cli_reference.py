"""Write docs/commands.md from the commands' own parsers, so the reference cannot drift from the code.

Run from the repository root with the project's environment: `.venv/bin/python docs/gen_cli_reference.py`
(`--check` exits 1 when docs/commands.md is stale). tests/unit/test_docs.py checks it is fresh.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "commands.md"

HEADER = """# Commands

Every command and subcommand with its `--help`, generated from the parsers by `docs/gen_cli_reference.py`
(do not edit by hand: run `.venv/bin/python docs/gen_cli_reference.py`). How they fit together:
[edge-export](export.md), [The device agent](agent.md), [Fleets](fleet.md),
[Pruning, sweeps, calibration, sensitivity, QAT](optimisation.md); exit codes and JSON:
[JSON output and exit codes](json-and-exit-codes.md).
"""


def parsers() -> dict[str, argparse.ArgumentParser]:
    """The entry points' parsers, by command name (the names in pyproject.toml's [project.scripts])."""
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


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render() -> str:
    os.environ["COLUMNS"] = "120"  # argparse wraps help at the terminal's width: fix it
    parts = [HEADER]
    for name, parser in parsers().items():
        parts.append(f"\n## {name}\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        for sub_name, sub in subcommands(parser).items():
            parts.append(f"\n### {name} {sub_name}\n\n```text\n{sub.format_help().rstrip()}\n```\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    text = render()
    if check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python docs/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
