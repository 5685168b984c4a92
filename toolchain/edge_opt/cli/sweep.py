"""``edge-sweep``: every precision × pruning amount × format, one table, CSV, JSON and a plot.

The parser is built from the argument groups edge-export shares (:mod:`edge_opt.cli.arguments`) plus the sweep's
own flags; the sweeps are :mod:`edge_opt.sweep`. For SmallCNN the reference guide's six published configurations
are printed beside ours. The sweeps (torch, every format) are imported only once the flags are parsed, so ``--help``
and usage errors answer without loading torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.contract.result import strict_json
from rich.console import Console

from edge_opt import progress, quiet
from edge_opt.cli.arguments import (
    add_data_arguments,
    add_model_arguments,
    add_output_arguments,
    add_quantization_arguments,
    add_run_arguments,
    config_from_args,
    new_parser,
)
from edge_opt.cli.command import Outcome, run_command


def _counts(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid batch counts {value!r}; use e.g. 4,8,16,32,64") from None


def _amounts(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid amounts {value!r}; use e.g. 0,0.5") from None


def build_parser() -> argparse.ArgumentParser:
    """edge-sweep's flags: edge-export's shared groups (no device group), then the sweep's own."""
    parser = new_parser(
        "edge-sweep", "Every precision × pruning amount × format: table, CSV, JSON and a plot (edge-export's flags apply)."
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_quantization_arguments(parser, budget=True)
    add_run_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--amounts", type=_amounts, help="pruning amounts, e.g. 0,0.25,0.5 (default: config pruning.amounts)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--calibration-sweep", type=_counts, metavar="N,N,...", help="INT8 accuracy vs calibration batches")
    mode.add_argument("--sensitivity", action="store_true", help="per-layer INT8 sensitivity and keep-in-float buy-back")
    parser.add_argument("--top", type=int, default=2, help="with --sensitivity: layers to keep in float (default 2)")
    parser.set_defaults(out=Path("sweep"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet.show_all_warnings(args.verbose)
    progress.set_enabled(not args.quiet)
    return run_command("edge-sweep", "sweep", lambda: _sweep(args), json_output=args.json, verbose=args.verbose)


def _sweep(args: argparse.Namespace) -> Outcome:
    # The sweeps import torch and every format: only once the flags are parsed (see the module's note).
    from edge_opt.config import with_overrides
    from edge_opt.sweep.plots import write_outputs
    from edge_opt.sweep.runs import run_sweep
    from edge_opt.sweep.tables import guide_table, sweep_table

    config = config_from_args(args)
    if args.precision is None:
        config = with_overrides(config, {"precisions": ["fp32", "fp16", "int8"]})
    if args.calibration_sweep or args.sensitivity:
        return _special(args, config)
    amounts = args.amounts or config.pruning.amounts
    if 0.0 not in amounts:
        amounts = (0.0, *amounts)  # the unpruned FP32 baseline every row is compared with
    rows = run_sweep(config, args.out, amounts)
    paths = write_outputs(rows, args.out)
    if not args.json:
        console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
        console.print(sweep_table(rows))
        if rows and rows[0]["model"] == "smallcnn":
            console.print(guide_table(rows))
        console.print(f"[dim]wrote {paths['csv']}, {paths['json']}, {paths['plot']}[/dim]")
    return Outcome({"rows": rows, "files": {k: str(v) for k, v in paths.items()}})


def _special(args: argparse.Namespace, config: Any) -> Outcome:
    from edge_opt.sweep.runs import calibration_sweep, sensitivity_report  # torch: after parsing
    from edge_opt.sweep.tables import calibration_table, print_sensitivity

    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.calibration_sweep:
        rows = calibration_sweep(config, args.out, args.calibration_sweep)
        (args.out / "calibration.json").write_text(strict_json(rows) + "\n", encoding="utf-8")
        if not args.json:
            method = f"FX {config.quantization.fx_observer.value}, ONNX Runtime {config.quantization.ort_calibration.value}"
            console.print(calibration_table(rows, method))
        return Outcome({"calibration": rows})
    result = sensitivity_report(config, args.out, args.top)
    (args.out / "sensitivity.json").write_text(strict_json(result) + "\n", encoding="utf-8")
    if not args.json:
        print_sensitivity(console, result)
    return Outcome({"sensitivity": result})


if __name__ == "__main__":
    sys.exit(main())
