"""``edge-export``: quantize and export a model, validate every artifact, print a summary table.

The CLI only parses, maps flags onto the validated config and dispatches; the job lives in
:mod:`edge_opt.export.pipeline`. Errors the user can fix are one line on stderr and a non-zero exit code
(see :mod:`edge_opt.errors`); ``-v`` shows tracebacks and every library warning.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_opt.cli.arguments import (
    add_data_arguments,
    add_model_arguments,
    add_output_arguments,
    add_quantization_arguments,
    add_run_arguments,
    config_from_args,
    decibels,
    format_list,
    new_parser,
    points,
    round_range,
)
from edge_opt.cli.command import Outcome, run_command
from edge_opt.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """edge-export's flags: the shared groups (:mod:`edge_opt.cli.arguments`) and the device group."""
    parser = new_parser(
        "edge-export",
        "Quantize (FP16, INT8) and export a PyTorch model as validated TorchScript, ONNX, ExecuTorch and LiteRT artifacts.",
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_quantization_arguments(parser, budget=False)
    add_run_arguments(parser)
    _add_device_options(parser)
    # One budget for the pick and QAT on need: unset, it comes from the config (quantization.qat.max_accuracy_drop).
    parser.set_defaults(max_accuracy_drop=None)
    add_output_arguments(parser)
    return parser


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    device = parser.add_argument_group("device (an edge-agent)")
    device.add_argument("--push", metavar="HOST:PORT", help="push the written artifacts to this agent (only what it lacks)")
    device.add_argument("--bench", action="store_true", help="with --push: benchmark each artifact on the device")
    device.add_argument("--token-file", type=Path, help="the agent's bearer token file")
    device.add_argument("--tls-ca", type=Path, help="CA certificate of the agent's TLS certificate")
    device.add_argument("--device-iterations", type=int, help="device benchmark iterations (default 100)")
    device.add_argument("--device-threads", type=int, help="device benchmark threads (default 1)")
    device.add_argument(
        "--pick",
        action="store_true",
        help="with --push: build every precision × format (unless --precision/--format narrow it), benchmark each on the "
        "device in interleaved rounds and name the fastest within the accuracy budget (OUT/recommended)",
    )
    device.add_argument(
        "--pick-rounds",
        type=round_range,
        default=(3, 12),
        metavar="N[-M]",
        help="rounds (a fresh worker per candidate each): N always, then more for the candidates tied with the fastest "
        "while the pick is undecided, up to M (default 3-12)",
    )

    def seconds(value: str) -> float:
        try:
            budget = float(value)
        except ValueError:
            budget = float("nan")
        if not 1 <= budget <= 86_400:  # also refuses nan
            raise argparse.ArgumentTypeError(f"invalid {value!r}: seconds from 1 to 86400, e.g. 600")
        return budget

    device.add_argument(
        "--pick-seconds",
        type=seconds,
        default=600.0,
        metavar="S",
        help="no round past N starts that would end after S seconds of rounds (default 600)",
    )
    device.add_argument(
        "--max-accuracy-drop", type=points, default=0.5, metavar="POINTS", help="the pick's budget below FP32 (default 0.5)"
    )
    device.add_argument(
        "--min-sqnr",
        type=decibels,
        default=30.0,
        metavar="DB",
        help="the pick's floor when the data has no labels (or the model no class scores): a candidate's outputs "
        "must be at least this SQNR against FP32's, in dB (default 30)",
    )


def _run(args: argparse.Namespace) -> Outcome:
    """Export, then push (and benchmark) when asked.

    Artifacts are written and validated either way. A device run that failed or disagreed makes the command
    "partial" (exit 8); a device that cannot be reached after the export exits 7. Both keep the export's result in
    the JSON, so that a script or CI job neither mistakes them for success nor loses what was written.
    """
    from edge_agent.contract.errors import InvalidSettings
    from edge_agent.contract.result import EXIT_PARTIAL, ResultError
    from edge_agent.contract.settings import BenchmarkSettings

    from edge_opt.errors import DeviceError
    from edge_opt.export.pipeline import run_export, write_summary
    from edge_opt.export.report import print_export_report

    if (args.bench or args.pick) and not args.push:
        raise ConfigError("--bench and --pick need --push HOST:PORT (the device to benchmark on)")
    if args.pick:  # every candidate, unless narrowed explicitly
        args.precision = args.precision or ("fp32", "fp16", "int8")
        args.format = args.format or format_list("all")
    config = config_from_args(args)
    settings = {"iterations": args.device_iterations, "threads": args.device_threads}
    settings = {k: v for k, v in settings.items() if v is not None}  # 0 is a value, refused by the bounds
    try:
        BenchmarkSettings.from_mapping(settings)  # the agent's own bounds, checked before hours of export
    except InvalidSettings as exc:
        raise ConfigError(f"device benchmark setting: {exc}") from None
    if args.push:  # the credentials files, before hours of export (a bad one is a usage mistake)
        from edge_opt.device.runs import credentials

        credentials(args.token_file, args.tls_ca)
    if args.push and args.target is None:
        # Build for the device we are about to push to: ask it first (and fail before the export if it is down).
        from edge_opt.device.runs import device_target

        target = device_target(args.push, token_file=args.token_file, tls_ca=args.tls_ca)
        if target and target != config.target:
            from edge_opt.config import with_overrides

            config = with_overrides(config, {"target": target})
    report = run_export(config, args.out)
    from rich.console import Console

    out = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    if not args.json:
        print_export_report(report, out)
    data = report.to_dict()
    # What passed is written; each refused artifact is named (exit 8). The pick leaves refused candidates out by design.
    refusals: list[ResultError] = (
        [] if args.pick else [{"code": "export", "message": f"{k}: {v}"} for k, v in report.refused.items()]
    )
    if not args.push:
        return Outcome(data, EXIT_PARTIAL if refusals else 0, refusals)
    from edge_opt.device.runs import device_failures, print_device_rows, push_and_bench

    try:
        rows = push_and_bench(
            report, args.push, token_file=args.token_file, tls_ca=args.tls_ca, bench=args.bench, settings=settings
        )
    except DeviceError as exc:
        write_summary(report.out_dir, data)
        return Outcome(data, exc.exit_code, [*refusals, {"code": exc.code, "message": str(exc)}])
    data["device"] = {"address": args.push, "runs": rows}
    failures: list[ResultError] = [*refusals, *device_failures(rows, bench=args.bench)]
    if not args.json:
        print_device_rows(out, args.push, rows)
    if args.pick:
        try:
            data["pick"] = _pick(args, report, settings)
        except DeviceError as exc:
            write_summary(report.out_dir, data)
            return Outcome(data, exc.exit_code, [{"code": exc.code, "message": str(exc)}])
        failures += [{"code": "device-run", "message": f"{k}: {v}"} for k, v in data["pick"]["failed"].items()]
        if not args.json:
            from edge_opt.device.pick_runs import print_pick

            print_pick(out, args.push, data["pick"])
    write_summary(report.out_dir, data)  # what --json prints, device runs and pick included
    return Outcome(data, EXIT_PARTIAL if failures else 0, failures)


def _pick(args: argparse.Namespace, report: Any, settings: dict[str, Any]) -> dict[str, Any]:
    from edge_agent.host.client import AgentClient, DeviceCallError

    from edge_opt import progress
    from edge_opt.device.pick_runs import pick_on_device
    from edge_opt.device.runs import credentials
    from edge_opt.errors import DeviceError

    # Data without labels (or a model without class scores): the budget is a fidelity floor, SQNR against FP32.
    fidelity = report.metric != "top1"
    left_out = {
        row.path.name: f"its outputs are {row.score:.1f} dB from FP32's (SQNR), below the pick's floor of "
        f"{args.min_sqnr:g} dB (--min-sqnr)"
        for row in report.rows
        if fidelity and row.path is not None and not row.score >= args.min_sqnr
    }
    folders = [row.path for row in report.rows if row.path is not None and row.path.name not in left_out]
    try:
        with AgentClient(args.push, credentials(args.token_file, args.tls_ca)) as client:
            return pick_on_device(
                client,
                folders,
                report.out_dir,
                reference_accuracy=None if fidelity else report.reference_accuracy,
                rounds=args.pick_rounds[0],
                max_rounds=args.pick_rounds[1],
                max_seconds=args.pick_seconds,
                settings=settings,
                max_accuracy_drop=None if fidelity else args.max_accuracy_drop / 100,
                on_round=lambda _, message: progress.status(f"pick on {args.push}: {message}"),
                refused=report.refused,
                left_out=left_out,
            )
    except DeviceCallError as exc:
        raise DeviceError(f"device {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from edge_opt import progress, quiet

    quiet.show_all_warnings(args.verbose)
    progress.set_enabled(not args.quiet)

    def body() -> Outcome:
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {args.out} exists and is not a folder; pick another path")
        return _run(args)

    return run_command(
        "edge-export",
        "export",
        body,
        json_output=args.json,
        verbose=args.verbose,
        interrupted="interrupted; nothing half-written was left behind",
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

