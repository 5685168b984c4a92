"""The flags of ``edge-agent``'s host commands (a device's address and credentials, benchmark settings, model
files, the user's data), the benchmark settings they set, checked, and the client they name. ``edge-fleet`` builds
its own commands from the same flags; :mod:`edge_agent.host.dispatch` runs the commands. They need no torch, so
any machine with the ``agent`` extra can drive a device."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from edge_agent.contract.errors import InvalidSettings
from edge_agent.contract.manifest import PRECISIONS
from edge_agent.contract.settings import BenchmarkSettings
from edge_agent.host.client import AgentClient, Credentials
from edge_agent.host.output import UsageError
from edge_agent.runtimes.onnx_session import OPTIMIZATION_LEVELS


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", required=True, help="the agent's HOST:PORT")
    parser.add_argument("--token-file", type=Path, help="bearer token file (or EDGE_AGENT_TOKEN)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate that signed the agent's certificate")
    parser.add_argument("--tls-cert", type=Path, help="client certificate for mTLS")
    parser.add_argument("--tls-key", type=Path, help="client key for mTLS")
    parser.add_argument("--server-name", help="expected name in the agent's certificate (if not the host)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call in seconds (default 30)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_bench_options(parser: argparse.ArgumentParser, *, keep_samples: bool = True) -> None:
    """The benchmark settings as flags (``bench_settings`` reads them back); ``keep_samples=False`` leaves out
    ``--keep-samples`` for commands that always keep them (the fleet's)."""
    # Unset flags take the agent's defaults; 0 is a value (--min-seconds 0: no minimum time).
    d = BenchmarkSettings
    parser.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    parser.add_argument("--threads", type=int, help=f"default {d.threads}")
    parser.add_argument("--warmup-runs", type=int, help=f"default {d.warmup_runs} (0: none)")
    parser.add_argument("--warmup-seconds", type=float, help=f"minimum warm-up time, default {d.warmup_min_seconds}")
    parser.add_argument("--iterations", type=int, help=f"default {d.iterations}")
    parser.add_argument("--min-seconds", type=float, help=f"minimum measuring time, default {d.min_seconds}")
    parser.add_argument("--run-timeout", type=float, help=f"worker timeout in seconds, default {d.timeout_seconds:.0f}")
    parser.add_argument("--graph-opt", choices=OPTIMIZATION_LEVELS, help="onnxruntime graph optimisation (default all)")
    if keep_samples:
        parser.add_argument(
            "--keep-samples", action="store_true", help="return the latency samples (at most 20,000, evenly spaced)"
        )


def bench_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark settings the flags set (unset ones are left to the agent), checked here against the same
    bounds the agent applies, so a mistake is a usage error before anything is pushed.

    Raises:
        UsageError: a value out of bounds, naming the setting and its range.
    """
    settings: dict[str, Any] = {
        "batch_size": args.batch_size,
        "threads": args.threads,
        "warmup_runs": args.warmup_runs,
        "warmup_min_seconds": args.warmup_seconds,
        "iterations": args.iterations,
        "min_seconds": args.min_seconds,
        "timeout_seconds": args.run_timeout,
        "keep_samples": getattr(args, "keep_samples", True),
    }
    if args.graph_opt:
        settings["graph_optimization"] = f"GRAPH_OPT_{args.graph_opt.upper()}"
    chosen = {k: v for k, v in settings.items() if v is not None and v is not False}
    try:
        BenchmarkSettings.from_mapping(chosen)
    except InvalidSettings as exc:
        raise UsageError(str(exc)) from None
    return chosen



def make_client(args: argparse.Namespace) -> AgentClient:
    creds = Credentials.from_files(
        args.token_file, args.tls_ca, args.tls_cert, args.tls_key, args.server_name, token=os.environ.get("EDGE_AGENT_TOKEN")
    )
    return AgentClient(args.device, creds, timeout=args.timeout)


def add_model_file_options(parser: argparse.ArgumentParser) -> None:
    """Flags for model files given as they are (``.onnx``, ``.pte``) instead of artifact folders."""
    parser.add_argument(
        "--input-shape",
        metavar="SHAPE",
        help="for model files: the input's whole shape, e.g. 1x3x224x224, fixing the dimensions the file leaves dynamic; "
        "its first size is the batch unless --batch-size is given",
    )
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        help="for model files: what the weights are, when the file does not show it (default: inferred from the file)",
    )


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--data``: evaluate on the device with the user's own data (read and preprocessed here; needs the toolchain)."""
    group = parser.add_argument_group(
        "evaluation on the device with your data (needs the toolchain extra: the data is read with torchvision's habits)"
    )
    group.add_argument(
        "--data",
        metavar="SOURCE",
        help="an image folder (class subfolders; its val/ or test/ when it has train/), an .npz (x, y) or "
        "package.module:function: the device evaluates each artifact on it (top-1 with labels; agreement and SQNR "
        "against this host's outputs)",
    )
    group.add_argument("--mean", type=_floats, metavar="M[,M,M]", help="normalisation mean for a model file (default 0)")
    group.add_argument("--std", type=_floats, metavar="S[,S,S]", help="normalisation std for a model file (default 1)")
    group.add_argument("--resize", type=_sizes, metavar="N|HxW", help="resize first (N: shorter side), then center-crop")
    group.add_argument("--eval-samples", type=int, metavar="N", help="items evaluated on the device (default 1000)")


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        example = "e.g. 0.485,0.456,0.406"
        raise argparse.ArgumentTypeError(f"invalid {value!r}; use one number or one per channel, {example}") from None


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.lower().replace("x", ",").split(",") if v)
    except ValueError:
        sizes = ()
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"invalid size {value!r}; use N (the shorter side) or HxW, e.g. 256")
    return sizes

