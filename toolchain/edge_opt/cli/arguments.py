"""The command-line arguments edge-export and edge-sweep share: argument types, the argument groups both parsers are
built from, and the mapping of parsed flags onto the validated config.

The config (and through it the format registry, whose plugins import torch) is imported only once the flags are
parsed, so ``--help`` and usage errors answer without loading torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_agent.contract.arguments import ArgumentParser

from edge_opt.errors import ConfigError

#: The examples both commands show (edge-sweep takes edge-export's flags).
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


def precision_list(value: str) -> tuple[str, ...]:
    if value == "all":
        return ("fp32", "fp16", "int8")
    return tuple(v.strip() for v in value.split(",") if v.strip())


def format_list(value: str) -> tuple[str, ...]:
    from edge_opt.formats.registry import all_formats, default_formats  # the plugins import torch: once parsing needs them

    if value == "both":
        return default_formats()
    if value == "all":
        return all_formats()
    return tuple(v.strip() for v in value.split(",") if v.strip())


def input_size(value: str) -> tuple[int, int]:
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


def float_list(value: str) -> list[float]:
    try:
        return [float(p) for p in value.split(",")]
    except ValueError:
        example = "e.g. 0.5 or 0.485,0.456,0.406"
        raise argparse.ArgumentTypeError(f"invalid {value!r}; use one number or one per channel, {example}") from None


def resize_size(value: str) -> tuple[int, ...]:
    parts = value.lower().replace("x", ",").split(",")
    try:
        sizes = tuple(int(p) for p in parts if p)
    except ValueError:
        sizes = ()
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"invalid size {value!r}; use N (the shorter side) or HxW, e.g. 256 or 256x320")
    return sizes


def fraction(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    if not 0 < fraction < 1:
        raise argparse.ArgumentTypeError(f"invalid {value!r}: a fraction between 0 and 1, e.g. 0.2")
    return fraction


def round_range(value: str) -> tuple[int, int]:
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


def decibels(value: str) -> float:
    try:
        decibels = float(value)
    except ValueError:
        decibels = float("nan")
    if not 0 <= decibels <= 200:  # also refuses nan
        raise argparse.ArgumentTypeError(f"invalid {value!r}: an SQNR in dB from 0 to 200, e.g. 30")
    return decibels


def points(value: str) -> float:
    try:
        points = float(value)
    except ValueError:
        points = float("nan")
    if not 0 <= points <= 100:  # also refuses nan
        raise argparse.ArgumentTypeError(f"invalid {value!r}: accuracy points from 0 to 100, e.g. 0.5")
    return points


def qat_epochs(value: str) -> int:
    try:
        epochs = int(value)
    except ValueError:
        epochs = 0
    if not 1 <= epochs <= 50:
        raise argparse.ArgumentTypeError(f"invalid {value!r}: a whole number of QAT epochs from 1 to 50, e.g. 2")
    return epochs


def qat_learning_rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = float("nan")
    if not 0 < rate <= 0.01:  # also refuses nan; QAT fine-tunes trained weights: larger rates undo the training
        raise argparse.ArgumentTypeError(f"invalid {value!r}: a QAT learning rate above 0 and at most 0.01, e.g. 1e-4")
    return rate


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An empty parser for one of the toolchain's commands, with the shared examples."""
    return ArgumentParser(
        prog=prog, description=description, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The config file, precisions, formats, target and the model."""
    parser.add_argument("--config", type=Path, help="YAML config (default: edge_opt/default.yaml, shipped in the package)")
    parser.add_argument("--precision", type=precision_list, help="fp32, fp16, int8, a comma list, or all (default: config)")
    parser.add_argument(
        "--format",
        type=format_list,
        help="torchscript, onnx, executorch (.pte, XNNPACK; INT8 by PT2E), litert (.tflite, XNNPACK), a comma list, "
        "both (torchscript,onnx) or all (default: config, torchscript and onnx)",
    )
    parser.add_argument(
        "--target",
        help="host, x86_64, x86_64-avx2 or arm64: decides the INT8 backend and types (default: the --push device's, else host)",
    )
    parser.add_argument("--model", help="smallcnn, a torchvision name (mobilenet_v2, resnet18, ...) or package.module:factory")
    parser.add_argument("--checkpoint", type=Path, help="state_dict to load (default: train SmallCNN once, cached)")
    parser.add_argument(
        "--input-size", type=input_size, metavar="HxW",
        help="model input size (default 28x28; needed with --data for models other than smallcnn)",
    )
    parser.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: what the model takes)")
    parser.add_argument(
        "--mean", type=float_list, metavar="M[,M,M]",
        help="input normalisation mean (default: 0.2860 on the built-in data; none on yours)",
    )
    parser.add_argument(
        "--std", type=float_list, metavar="S[,S,S]",
        help="input normalisation std (default: 0.3530 on the built-in data; none on yours)",
    )
    parser.add_argument("--num-classes", type=int, metavar="N", help="the model's classes (default: the data's; 10)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The user's data (default: Fashion-MNIST, built in)."""
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
        "--val-fraction", type=fraction, metavar="F", help="share of one source held out for evaluation (default 0.2)"
    )
    data.add_argument(
        "--resize", type=resize_size, metavar="N|HxW", help="resize images to this first (N: the shorter side), then "
        "center-crop to --input-size (default: resize straight to --input-size)",
    )


def add_quantization_arguments(parser: argparse.ArgumentParser, *, budget: bool) -> None:
    """Calibration, kept-float layers and quantization-aware training; ``budget`` adds --max-accuracy-drop to the QAT
    group (edge-export has it among its device flags instead, where the pick shares it)."""
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
    qat.add_argument("--qat-epochs", type=qat_epochs, metavar="N", help="QAT epochs over the training split (1-50, default 2)")
    qat.add_argument("--qat-lr", type=qat_learning_rate, metavar="LR", help="QAT learning rate (Adam; up to 0.01, default 1e-4)")
    if budget:  # edge-export has it in its device group (the pick's budget): one flag, one budget
        qat.add_argument(
            "--max-accuracy-drop", type=points, metavar="POINTS", help="--qat on-need's budget below FP32 (default 0.5)"
        )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Pruning, batch size, data folder, evaluation items, host threads and the output folder."""
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


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """JSON output, quiet and verbose."""
    parser.add_argument("--json", action="store_true", help="print a versioned JSON result on stdout instead of a table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and all library warnings")


def config_from_args(args: argparse.Namespace) -> Any:
    """The config file (or the shipped default) with the flags' overrides, validated.

    Raises:
        ConfigError: the file or an override is invalid.
    """
    from edge_opt.config import load_config, with_overrides  # torch, through the format registry: after parsing

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

