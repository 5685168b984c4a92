"""The one place the toolchain's commands (edge-export, edge-sweep, edge-fleet) turn work into output and exit codes.

A command's body returns an :class:`Outcome`; :func:`run_command` prints the JSON envelope when ``--json`` asks
for it, and maps errors: a :class:`~edge_opt.errors.ToolchainError` becomes one line on stderr (with ``-v``, its
traceback too), the envelope's ``errors`` and the error's exit code; Ctrl-C exits 130. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_agent.contract.result import ResultError, envelope

from edge_opt.errors import ToolchainError
from edge_opt.export.report import print_json


@dataclass
class Outcome:
    """What a command did: its JSON ``data``, its exit code, and the errors behind a non-zero code."""

    data: dict[str, Any] | None
    exit_code: int = 0
    errors: list[ResultError] = field(default_factory=list)


def run_command(
    prog: str,
    command: str,
    body: Callable[[], Outcome],
    *,
    json_output: bool,
    verbose: bool = False,
    interrupted: str = "interrupted",
) -> int:
    """Run ``body`` and return the process exit code; ``command`` names it in the JSON envelope."""
    try:
        outcome = body()
    except ToolchainError as exc:
        if verbose:
            traceback.print_exception(exc)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        if json_output:
            print_json(envelope(command, None, [{"code": exc.code, "message": str(exc)}], exc.exit_code))
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    for error in outcome.errors:
        print(f"{prog}: {error['code']}: {error['message']}", file=sys.stderr)
    if json_output:
        data = None if outcome.data is None else json.loads(json.dumps(outcome.data, default=str))
        print_json(envelope(command, data, outcome.errors, outcome.exit_code))
    return outcome.exit_code
