"""``edge-agent bench``: every argument checked on the host (nothing is sent before), then each pushed and run on
the device through one :class:`edge_agent.host.session.DeviceSession`, a line printed per artifact as it ends (or
the JSON envelope with every entry), and the exit code the outcome calls for."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.contract.result import EXIT_DEVICE, EXIT_PARTIAL, ResultError
from edge_agent.host.client import DeviceCallError
from edge_agent.host.commands import bench_settings, make_client
from edge_agent.host.output import UsageError, format_result_line, print_result
from edge_agent.host.session import DeviceSession, SessionHooks, Target
from edge_agent.host.targets import attach_evaluation, bench_targets


def bench_command(args: argparse.Namespace) -> int:
    """``edge-agent bench``: every argument checked on the host (nothing is sent before), then each pushed and run."""
    if args.run_id and len(args.artifacts) > 1:
        raise UsageError("--run-id names one run: give one artifact")
    settings = bench_settings(args)
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as scratch:
        targets = bench_targets(args, settings, Path(scratch))
        attach_evaluation(args, targets, Path(scratch))
        with make_client(args) as client:
            session_targets = [
                Target(t.label, t.folder, t.format, t.settings, t.eval_set, t.eval_reference, run_id=args.run_id) for t in targets
            ]
            hooks = None if args.json else _Lines({id(s): t.name for s, t in zip(session_targets, targets, strict=True)})
            result = DeviceSession(client, hooks=hooks).run_all(session_targets)
    return bench_outcome(args, result.entries, result.device_error)


class _Lines(SessionHooks):
    """Without ``--json``: the run's progress on stderr, then one line per artifact on stdout as it ends."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names

    def event(self, target: Target, event: dict[str, Any]) -> None:
        _progress_printer(self.names[id(target)])(event)

    def finished(self, target: Target, entry: dict[str, Any]) -> None:
        name = self.names[id(target)]
        print("\r", end="", file=sys.stderr)
        print(f"{name}: not run: {entry['skipped']}" if "skipped" in entry else format_result_line(name, entry))


def _progress_printer(name: str) -> Callable[[dict[str, Any]], None]:
    def show(event: dict[str, Any]) -> None:
        if "progress" in event:
            p = event["progress"]
            print(f"\r{name}: {p['phase']} {p['done']}/{p['total']}   ", end="", file=sys.stderr, flush=True)
        elif "queue_position" in event:
            print(f"{name}: queued (position {event['queue_position']})", file=sys.stderr)

    return show



def bench_outcome(args: argparse.Namespace, entries: list[dict[str, Any]], device_error: DeviceCallError | None) -> int:
    """Exit 0 when every artifact the device can run ran and succeeded; 7 (the device's failure) when nothing ran
    and the device refused or failed; else 8 (partial), each failure named. All entries go into the JSON."""
    failed = [e for e in entries if "result" not in e and "skipped" not in e]
    ran = any(str(e.get("state", "")).startswith("RUN_STATE_") for e in entries)
    errors: list[ResultError] = []
    for e in failed:
        error = e.get("error") or {}
        state = str(e.get("state", "FAILED")).removeprefix("RUN_STATE_")
        errors.append({"code": error.get("code") or state, "message": f"{e['artifact']}: {error.get('message') or state}"})
    for e in entries:  # timed, but the device could not evaluate it on the data (--data): named, exit 8
        problem = ((e.get("result") or {}).get("evaluation") or {}).get("error")
        if problem:
            errors.append({"code": "evaluation", "message": f"{e['artifact']}: the device's evaluation failed: {problem}"})
    if entries and all("skipped" in e for e in entries):
        reasons = "; ".join(sorted({e["skipped"] for e in entries}))
        errors.append({"code": "device-runtime", "message": f"the device can run none of these artifacts: {reasons}"})
    if not errors:
        code = 0
    elif failed and not ran and any(e.get("state") in ("REFUSED", "UNREACHABLE", "NOT_RUN") for e in failed):
        code = EXIT_DEVICE
    else:
        code = EXIT_PARTIAL
    if code == EXIT_DEVICE:  # one line on stderr, as for any failure of the device
        print(f"edge-agent: error: {device_error if device_error is not None else errors[0]['message']}", file=sys.stderr)
    if args.json:
        print_result(args, entries, "", code, errors)
    return code
