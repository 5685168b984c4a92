"""What ``edge-agent``'s host commands print: a line per result for people, or the versioned JSON envelope with
``--json`` (:mod:`edge_agent.contract.result`); and the two mistakes a host command names before it exits."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edge_agent.contract.result import ResultError, envelope, json_text


class DataProblem(ValueError):
    """The data given with ``--data`` cannot be read or does not fit the model (exit 3, as the toolchain's)."""


class UsageError(ValueError):
    """A host command used wrongly (exit 2): nothing was sent to the device."""



def envelope_text(args: argparse.Namespace, payload: Any, exit_code: int, errors: list[ResultError]) -> str:
    return json_text(envelope(args.command, payload, errors, exit_code))


def print_result(
    args: argparse.Namespace, payload: Any, human: str, exit_code: int = 0, errors: list[ResultError] | None = None
) -> None:
    if getattr(args, "json", False):
        print(envelope_text(args, payload, exit_code, errors or []))
    else:
        print(human)


def fail(args: argparse.Namespace, code: int, error_code: str, message: str) -> int:
    """One line on stderr; with --json also the envelope on stdout."""
    print(f"edge-agent: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(envelope_text(args, None, code, [{"code": error_code, "message": message}]))
    return code


def format_result_line(name: str, event: dict[str, Any]) -> str:
    if "result" in event:
        r = event["result"]
        lat = r["latency"]
        flag = "  DISTURBED: " + "; ".join(r.get("warnings", [])) if r.get("disturbed") else ""
        return (
            f"{name}: p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f}  p99 {lat['p99_ms']:.3f}  "
            f"mean {lat['mean_ms']:.3f}±{lat['std_ms']:.3f}  n={lat['count']}  {lat['throughput_per_s']:.1f}/s  "
            f"load {r['load_seconds']:.2f}s  first {r['first_inference_ms']:.2f} ms  "
            f"peak RSS {int(r['peak_rss_bytes']) / 2**20:.0f} MiB{flag}{_evaluation_text(r.get('evaluation'))}"
        )
    err = event.get("error", {})
    state = str(event.get("state", "FAILED")).removeprefix("RUN_STATE_")
    return f"{name}: {state} {err.get('code', '')}: {err.get('message', '')}"


def _evaluation_text(evaluation: dict[str, Any] | None) -> str:
    """What the device's evaluation on the data said, for the human line ('' without one)."""
    if not evaluation:
        return ""
    if evaluation.get("error"):
        return f"  EVALUATION FAILED: {evaluation['error']}"
    parts = [f"n={evaluation.get('samples', 0)}"]
    if evaluation.get("top1_accuracy") is not None:
        parts.append(f"top-1 {evaluation['top1_accuracy'] * 100:.2f}%")
    if evaluation.get("has_reference"):
        parts.append(f"agree {evaluation.get('agreement_with_host', 0) * 100:.1f}%")
        if evaluation.get("sqnr_db") is not None:
            parts.append(f"SQNR {evaluation['sqnr_db']:.1f} dB")
    return "  evaluated: " + "  ".join(parts)

