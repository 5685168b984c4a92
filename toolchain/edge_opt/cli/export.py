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

from edge_agent.arguments import ArgumentParser

from edge_opt.cli.command import Outcome, run_command
from edge_opt.errors import ConfigError

EXAMPLES = """\
examples:
  edge-export --precision int8                       SmallCNN on Fashion-MNIST → INT8 TorchScript + ONNX in ./artifacts
  edge-export --precision all --out build/art        FP32, FP16 and INT8, TorchScript and ONNX
  edge-export --precision int8 --format all          INT8 TorchScript (FX), ONNX (ONNX Runtime), ExecuTorch (PT2E)
  edge-export --precision int8 --target arm64        INT8 for a Raspberry Pi (qnnpack, S8S8 ONNX)
  edge-export --precision int8 --prune 0.5           half the channels removed, fine-tuned, then INT8
  edge-export --precision int8 --qat                 INT8 by PTQ and by quantization-aware training; the better written
  edge-export --precision int8 --qat on-need --max-accuracy-drop 0.5
                                                     QAT only for the artifacts whose PTQ loses more than 0.5 points
  edge-export --model mobilenet_v2 --input-size 96 --precision int8 --format onnx --eval-samples 1000
  edge-export --model mypkg.nets:build --checkpoint weights.pt --precision int8
  edge-export --model mypkg.nets:build --checkpoint w.pt --data photos/ --input-size 224 --resize 256 \
              --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --precision int8
                                                     your model on your image folder (class subfolders; train/ + val/)
  edge-export --model mypkg.nets:build --checkpoint w.pt --data data.npz --precision int8
                                                     arrays x (N,H,W,C uint8 or N,C,H,W float32) and y (labels)
  edge-export --model mypkg.nets:build --checkpoint weights.pt --channels 3 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
  edge-export --precision int8 --json > result.json  machine-readable result on stdout
  edge-export --precision int8 --push 127.0.0.1:50051 --token-file tok --bench
                                                     push to an edge-agent and benchmark there

environment:
  EDGE_OPT_DATA_DIR   folder holding FashionMNIST/raw, the built-in data (default: ~/.cache/edge-opt/datasets)
  EDGE_OPT_CACHE_DIR  trained checkpoints cache (default: ~/.cache/edge-opt)
"""


def _precisions(value: str) -> tuple[str, ...]:
    if value == "all":
        return ("fp32", "fp16", "int8")
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _formats(value: str) -> tuple[str, ...]:
    if value == "both":
        return ("torchscript", "onnx")
    if value == "all":
        return ("torchscript", "onnx", "executorch")
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _size(value: str) -> tuple[int, int]:
    parts = value.lower().replace("x", ",").split(",")
    try:
        sizes = [int(p) for p in parts if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {value!r}; use N or HxW, e.g. 96 or 64x64") from None
    if len(sizes) == 1:
        return (sizes[0], sizes[0])
    if len(sizes) == 2:
        return (sizes[0], sizes[1])
    raise argparse.ArgumentTypeError(f"invalid size {value!r}; use N or HxW, e.g. 96 or 64x64")


def _floats(value: str) -> list[float]:
    try:
        return [float(p) for p in value.split(",")]
    except ValueError:
        example = "e.g. 0.5 or 0.485,0.456,0.406"
        raise argparse.ArgumentTypeError(f"invalid {value!r}; use one number or one per channel, {example}") from None


def _resize(value: str) -> tuple[int, ...]:
    parts = value.lower().replace("x", ",").split(",")
    try:
        sizes = tuple(int(p) for p in parts if p)
    except ValueError:
        sizes = ()
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"invalid size {value!r}; use N (the shorter side) or HxW, e.g. 256 or 256x320")
    return sizes


def _fraction(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    if not 0 < fraction < 1:
        raise argparse.ArgumentTypeError(f"invalid {value!r}: a fraction between 0 and 1, e.g. 0.2")
    return fraction


def _rounds(value: str) -> tuple[int, int]:
    """``N`` (exactly N rounds) or ``N-M`` (N rounds, then more while the pick is undecided, up to M)."""
    first, _, last = value.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        low = high = 0
    if not 1 <= low <= high <= 100:
        raise argparse.ArgumentTypeError(
            f"invalid {value!r}: N or N-M rounds, 1 <= N <= M <= 100, e.g. 3 (exactly 3) or 3-12 (3, up to 12 if undecided)"
        )
    return low, high


def _decibels(value: str) -> float:
    try:
        decibels = float(value)
    except ValueError:
        decibels = float("nan")
    if not 0 <= decibels <= 200:  # also refuses nan
        raise argparse.ArgumentTypeError(f"invalid {value!r}: an SQNR in dB from 0 to 200, e.g. 30")
    return decibels


def _points(value: str) -> float:
    try:
        points = float(value)
    except ValueError:
        points = float("nan")
    if not 0 <= points <= 100:  # also refuses nan
        raise argparse.ArgumentTypeError(f"invalid {value!r}: accuracy points from 0 to 100, e.g. 0.5")
    return points


def _qat_epochs(value: str) -> int:
    try:
        epochs = int(value)
    except ValueError:
        epochs = 0
    if not 1 <= epochs <= 50:
        raise argparse.ArgumentTypeError(f"invalid {value!r}: a whole number of QAT epochs from 1 to 50, e.g. 2")
    return epochs


def _qat_learning_rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = float("nan")
    if not 0 < rate <= 0.01:  # also refuses nan; QAT fine-tunes trained weights: larger rates undo the training
        raise argparse.ArgumentTypeError(f"invalid {value!r}: a QAT learning rate above 0 and at most 0.01, e.g. 1e-4")
    return rate


def build_parser(*, device: bool = True) -> argparse.ArgumentParser:
    """edge-export's flags; ``device=False`` leaves out the device group (edge-sweep shares the rest)."""
    parser = ArgumentParser(
        prog="edge-export",
        description="Quantize (FP16, INT8) and export a PyTorch model as validated TorchScript and ONNX artifacts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--precision", type=_precisions, help="fp32, fp16, int8, a comma list, or all (default: config)")
    parser.add_argument(
        "--format",
        type=_formats,
        help="torchscript, onnx, executorch (.pte, XNNPACK; INT8 by PT2E), a comma list, both (torchscript,onnx) or all "
        "(default: config, torchscript and onnx)",
    )
    parser.add_argument(
        "--target",
        help="host, x86_64, x86_64-avx2 or arm64: decides the INT8 backend and types (default: the --push device's, else host)",
    )
    parser.add_argument("--model", help="smallcnn, a torchvision name (mobilenet_v2, resnet18, ...) or package.module:factory")
    parser.add_argument("--checkpoint", type=Path, help="state_dict to load (default: train SmallCNN once, cached)")
    parser.add_argument(
        "--input-size", type=_size, metavar="HxW",
        help="model input size (default 28x28; needed with --data for models other than smallcnn)",
    )
    parser.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: what the model takes)")
    parser.add_argument(
        "--mean", type=_floats, metavar="M[,M,M]",
        help="input normalisation mean (default: 0.2860 on the built-in data; none on yours)",
    )
    parser.add_argument(
        "--std", type=_floats, metavar="S[,S,S]",
        help="input normalisation std (default: 0.3530 on the built-in data; none on yours)",
    )
    parser.add_argument("--num-classes", type=int, metavar="N", help="the model's classes (default: the data's; 10)")
    data = parser.add_argument_group(
        "data (default: Fashion-MNIST, built in)",
        "your own data: an image folder (one subfolder per class; train/ + val/ or test/ subfolders are used as "
        "such), an .npz (x: uint8 N,H,W[,C] images or float32 N,C,H,W inputs; y: labels, optional) or "
        "package.module:function returning a torch Dataset of (input, label)",
    )
    data.add_argument("--data", metavar="SOURCE", help="calibrate and evaluate on this data (split when it is one source)")
    data.add_argument("--calibration-data", metavar="SOURCE", help="calibration / training data of its own")
    data.add_argument("--eval-data", metavar="SOURCE", help="evaluation data of its own")
    data.add_argument(
        "--val-fraction", type=_fraction, metavar="F", help="share of one source held out for evaluation (default 0.2)"
    )
    data.add_argument(
        "--resize", type=_resize, metavar="N|HxW", help="resize images to this first (N: the shorter side), then "
        "center-crop to --input-size (default: resize straight to --input-size)",
    )
    parser.add_argument("--calibration-batches", type=int, metavar="N", help="INT8 calibration batches (default 8)")
    parser.add_argument("--fx-observer", choices=["default", "minmax", "moving_average", "histogram"], help="FX INT8 observer")
    parser.add_argument("--ort-calibration", choices=["minmax", "entropy", "percentile"], help="ONNX Runtime calibration")
    parser.add_argument(
        "--keep-float",
        action="append",
        metavar="MODULE",
        help="keep this layer in float in INT8 (repeatable; see edge-sweep --sensitivity)",
    )
    qat = parser.add_argument_group(
        "quantization-aware training (INT8; needs labelled data)",
        "fine-tune with fake quantization in the loop on the training split (FX for TorchScript and ONNX, PT2E for "
        "ExecuTorch); PTQ is built too, and the more accurate of the two on the evaluation split is written",
    )
    qat.add_argument(
        "--qat", nargs="?", const="always", choices=["always", "on-need", "off"], metavar="always|on-need",
        help="QAT for every INT8 artifact (--qat), or only for those whose PTQ drop exceeds --max-accuracy-drop "
        "(--qat on-need)",
    )  # fmt: skip
    qat.add_argument("--qat-epochs", type=_qat_epochs, metavar="N", help="QAT epochs over the training split (1-50, default 2)")
    qat.add_argument("--qat-lr", type=_qat_learning_rate, metavar="LR", help="QAT learning rate (Adam; up to 0.01, default 1e-4)")
    if not device:  # edge-export has it in the device group (the pick's budget): one flag, one budget
        qat.add_argument(
            "--max-accuracy-drop", type=_points, metavar="POINTS", help="--qat on-need's budget below FP32 (default 0.5)"
        )
    parser.add_argument("--prune", type=float, metavar="AMOUNT", help="prune this fraction (e.g. 0.5) before quantizing")
    parser.add_argument("--prune-method", choices=["structured", "unstructured"], help="default structured (layers shrink)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="calibration and evaluation batch size")
    parser.add_argument("--data-dir", type=Path, help="folder holding FashionMNIST/raw (or set EDGE_OPT_DATA_DIR)")
    parser.add_argument("--no-download", action="store_true", help="never try to download Fashion-MNIST")
    parser.add_argument(
        "--eval-samples", type=int, metavar="N",
        help="evaluation items used (default: all; Fashion-MNIST: 10,000)",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="threads for host latency (default 1)")
    parser.add_argument("--out", type=Path, default=Path("artifacts"), help="output folder (default ./artifacts)")
    if device:
        _add_device_options(parser)
        # One budget for the pick and QAT on need: unset, it comes from the config (quantization.qat.max_accuracy_drop).
        parser.set_defaults(max_accuracy_drop=None)
    parser.add_argument("--json", action="store_true", help="print a versioned JSON result on stdout instead of a table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and all library warnings")
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
        type=_rounds,
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
        "--max-accuracy-drop", type=_points, default=0.5, metavar="POINTS", help="the pick's budget below FP32 (default 0.5)"
    )
    device.add_argument(
        "--min-sqnr",
        type=_decibels,
        default=30.0,
        metavar="DB",
        help="the pick's floor when the data has no labels (or the model no class scores): a candidate's outputs "
        "must be at least this SQNR against FP32's, in dB (default 30)",
    )


def config_from_args(args: argparse.Namespace) -> Any:
    from edge_opt.config import load_config, with_overrides

    config = load_config(args.config)
    overrides: dict[str, Any] = {
        "precisions": args.precision,
        "formats": args.format,
        "target": args.target,
        "model.name": args.model,
        "model.checkpoint": args.checkpoint,
        "model.input_size": args.input_size,
        "model.channels": args.channels,
        "model.mean": args.mean,
        "model.std": args.std,
        "model.num_classes": args.num_classes,
        "data.source": args.data,
        "data.calibration": args.calibration_data,
        "data.eval": args.eval_data,
        "data.val_fraction": args.val_fraction,
        "data.resize": args.resize,
        "calibration_batches": args.calibration_batches,
        "pruning.amount": args.prune,
        "quantization.fx_observer": args.fx_observer,
        "quantization.ort_calibration": args.ort_calibration,
        "quantization.keep_float": args.keep_float,
        "pruning.method": args.prune_method,
        "data.batch_size": args.batch_size,
        "data.root": args.data_dir,
        "data.eval_samples": args.eval_samples,
        "benchmark.threads": args.threads,
        "quantization.qat.mode": args.qat,
        "quantization.qat.epochs": args.qat_epochs,
        "quantization.qat.learning_rate": args.qat_lr,
        "quantization.qat.max_accuracy_drop": args.max_accuracy_drop,
    }
    if args.no_download:
        overrides["data.download"] = False
    if args.qat not in (None, "off") and args.precision is not None and "int8" not in args.precision:
        raise ConfigError(f"--qat trains INT8 models, and --precision {','.join(args.precision)} has no int8: add int8")
    config = with_overrides(config, overrides)
    if args.max_accuracy_drop is None:
        args.max_accuracy_drop = config.quantization.qat.max_accuracy_drop  # the pick's budget: the same one
    return config


def _run(args: argparse.Namespace) -> Outcome:
    """Export, then push (and benchmark) when asked.

    Artifacts are written and validated either way. A device run that failed or disagreed makes the command
    "partial" (exit 8); a device that cannot be reached after the export exits 7. Both keep the export's result in
    the JSON, so that a script or CI job neither mistakes them for success nor loses what was written.
    """
    from edge_agent.errors import InvalidSettings
    from edge_agent.result import EXIT_PARTIAL
    from edge_agent.settings import BenchmarkSettings

    from edge_opt.errors import DeviceError
    from edge_opt.export.pipeline import run_export, write_summary
    from edge_opt.export.report import print_export_report

    if (args.bench or args.pick) and not args.push:
        raise ConfigError("--bench and --pick need --push HOST:PORT (the device to benchmark on)")
    if args.pick:  # every candidate, unless narrowed explicitly
        args.precision = args.precision or ("fp32", "fp16", "int8")
        args.format = args.format or _formats("all")
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
    refusals = [] if args.pick else [{"code": "export", "message": f"{k}: {v}"} for k, v in report.refused.items()]
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
    failures = refusals + device_failures(rows, bench=args.bench)
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
    from edge_agent.client import AgentClient, DeviceCallError

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
