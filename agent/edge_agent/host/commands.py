"""``edge-agent``'s host-side commands (info, push, bench, runs, get, list, delete): talk to one device through
:class:`edge_agent.host.client.AgentClient` and print a line per result, or the versioned JSON envelope with ``--json``.
They need no torch, so any machine with the ``agent`` extra can drive a device."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.contract.errors import InvalidSettings
from edge_agent.contract.manifest import PRECISIONS
from edge_agent.contract.result import (
    EXIT_DATA,
    EXIT_DEVICE,
    EXIT_ERROR,
    EXIT_PARTIAL,
    EXIT_USAGE,
    ResultError,
    envelope,
    json_text,
)
from edge_agent.contract.settings import BenchmarkSettings
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


class DataProblem(ValueError):
    """The data given with ``--data`` cannot be read or does not fit the model (exit 3, as the toolchain's)."""


class UsageError(ValueError):
    """A host command used wrongly (exit 2): nothing was sent to the device."""


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


def make_client(args: argparse.Namespace) -> Any:
    from edge_agent.host.client import AgentClient, Credentials

    creds = Credentials.from_files(
        args.token_file, args.tls_ca, args.tls_cert, args.tls_key, args.server_name, token=os.environ.get("EDGE_AGENT_TOKEN")
    )
    return AgentClient(args.device, creds, timeout=args.timeout)


def _envelope(args: argparse.Namespace, payload: Any, exit_code: int, errors: list[ResultError]) -> str:
    return json_text(envelope(args.command, payload, errors, exit_code))


def _print(args: argparse.Namespace, payload: Any, human: str, exit_code: int = 0, errors: list | None = None) -> None:
    if getattr(args, "json", False):
        print(_envelope(args, payload, exit_code, errors or []))
    else:
        print(human)


def _fail(args: argparse.Namespace, code: int, error_code: str, message: str) -> int:
    """One line on stderr; with --json also the envelope on stdout."""
    print(f"edge-agent: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(_envelope(args, None, code, [{"code": error_code, "message": message}]))
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


def run_host_command(args: argparse.Namespace) -> int:
    from edge_agent.host.client import DeviceCallError

    try:
        if args.command == "bench":
            return _bench(args)  # its arguments are checked before a client exists
        with make_client(args) as client:
            return _dispatch_client(args, client)
    except DeviceCallError as exc:
        return _fail(args, EXIT_DEVICE, exc.code, str(exc))
    except UsageError as exc:
        return _fail(args, EXIT_USAGE, "USAGE", str(exc))
    except DataProblem as exc:
        return _fail(args, EXIT_DATA, "data", str(exc))
    except (ValueError, OSError) as exc:
        return _fail(args, EXIT_ERROR, "ERROR", str(exc))


def _dispatch_client(args: argparse.Namespace, client: Any) -> int:
    if args.command == "info":
        info = client.info()
        human = "\n".join(f"{k}: {v}" for k, v in info.items())
        _print(args, info, human)
    elif args.command == "list":
        artifacts = client.list_artifacts()
        _print(
            args,
            artifacts,
            "\n".join(
                f"{a['sha256'][:16]}  {a['format']:<11} {a['precision']:<4} {a['size_bytes']:>10}  {a['name']}" for a in artifacts
            )
            or "(no artifacts)",
        )
    elif args.command == "delete":
        _print(args, {"deleted": client.delete(args.sha256)}, f"deleted {args.sha256}")
    elif args.command == "get":
        run = client.get_run(args.run_id)
        _print(args, run, format_result_line(run["run_id"], run) + f"  [{run['state'].removeprefix('RUN_STATE_')}]")
    elif args.command == "runs":
        runs = client.list_runs(args.after_seq)
        _print(
            args,
            runs,
            "\n".join(
                f"{r['seq']:>6} {r['run_id']}  {r['state'].removeprefix('RUN_STATE_'):<12} {r['sha256'][:16]}" for r in runs
            )
            or "(no runs)",
        )
    elif args.command == "push":
        outcomes = [client.push(folder) for folder in args.artifacts]
        _print(
            args,
            [o.__dict__ for o in outcomes],
            "\n".join(
                f"{o.name}: {'already on the device' if o.already_present else f'pushed {o.bytes_sent} bytes'}"
                + (f" (resumed at {o.resumed_from})" if o.resumed_from else "")
                for o in outcomes
            ),
        )
    return 0


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


def attach_evaluation(args: argparse.Namespace, targets: list[BenchTarget], scratch: Path) -> None:
    """With ``--data``: each target's evaluation set (the data preprocessed for its input) and this host's outputs
    on it, as folders under ``scratch``.

    Raises:
        UsageError: the toolchain is not installed, or data flags without ``--data``.
        ValueError: the data cannot be read or does not fit the model (exit 1, the message names it).
    """
    flags = [f for f in ("mean", "std", "resize", "eval_samples") if getattr(args, f, None) is not None]
    if not getattr(args, "data", None):
        if flags:
            raise UsageError(f"--{flags[0].replace('_', '-')} is for --data (evaluation with your data): give --data")
        return
    if args.eval_samples is not None and args.eval_samples < 1:
        raise UsageError(f"--eval-samples {args.eval_samples}: give the number of items to evaluate, at least 1 (default 1000)")
    try:
        from edge_opt.data.device_sets import DEFAULT_SAMPLES, device_sets, host_runner, manifest_preprocessing
        from edge_opt.errors import ToolchainError
    except ImportError:
        raise UsageError(
            "--data reads and preprocesses your data with the toolchain: install it beside the agent "
            "(pip install 'edge-opt[toolchain]'), or leave --data out"
        ) from None
    from edge_agent.contract.manifest import read_artifact

    for i, target in enumerate(targets):
        artifact = read_artifact(target.folder)
        spec = artifact.manifest.get("input") or {}
        shape = [target.settings.get("batch_size") or 1, *list(spec.get("shape") or [])[1:]]
        dtype = spec.get("dtype", "float32")
        try:
            run = host_runner(artifact.model, target.format, dtype)
        except Exception as exc:  # the runtime refused the file: a model this host cannot compute the reference of
            first = " ".join(str(exc).split())[:300] or type(exc).__name__
            why = f"this host cannot run the model to compute its outputs on the data: {first}"
            raise ValueError(f"{target.label}: {why}") from None
        try:
            sets = device_sets(
                args.data,
                shape,
                scratch / f"eval-{i}",
                manifest_preprocessing=None if target.model_file else manifest_preprocessing(target.folder),
                mean=args.mean,
                std=args.std,
                resize=args.resize,
                samples=args.eval_samples or DEFAULT_SAMPLES,
                run=run,
            )
        except ToolchainError as exc:
            raise DataProblem(f"{target.label}: {exc}") from None
        target.eval_set, target.eval_reference = sets.inputs, sets.reference


@dataclass
class BenchTarget:
    """One thing ``edge-agent bench`` benchmarks: an artifact folder (the user's, or one written for a model file),
    the settings of its run, and the evaluation-set folders to run it with (none unless a caller adds them)."""

    #: What the user named (the result's ``artifact``) and its short name (the human line's).
    label: str
    name: str
    folder: Path
    format: str
    settings: dict[str, Any]
    #: A model file given as it is (its folder was written here), not an artifact folder.
    model_file: bool = False
    eval_set: Path | None = None
    eval_reference: Path | None = None


def bench_targets(args: argparse.Namespace, settings: dict[str, Any], scratch: Path) -> list[BenchTarget]:
    """Every argument of ``edge-agent bench`` checked on the host, before anything is sent: an artifact folder
    through the manifest reader; a ``.onnx`` or ``.pte`` file read (:mod:`edge_agent.host.model_file`), its input
    resolved with ``--input-shape`` / ``--batch-size``, and its artifact folder written under ``scratch``.

    Raises:
        UsageError: an argument that is neither a folder nor a model file, a dynamic input without
            ``--input-shape``, a shape or batch the file contradicts (exit 2).
        ValueError: a malformed artifact folder, a file that is not a model this can run, a missing path (exit 1).
    """
    from edge_agent.contract.manifest import read_artifact
    from edge_agent.host.model_file import (
        SUFFIXES,
        InputShapeError,
        format_of,
        manifest_for,
        parse_input_shape,
        read_model_file,
        resolve_input,
        stage_model_file,
    )

    try:
        given = parse_input_shape(args.input_shape) if args.input_shape is not None else None
    except InputShapeError as exc:
        raise UsageError(str(exc)) from None
    targets = []
    misfits: list[str] = []  # model files --input-shape does not fit (they declare all their sizes)
    for i, path in enumerate(args.artifacts):
        if path.is_dir():
            if format_of(path) is not None and not (path / "manifest.json").exists():
                raise ValueError(f"{path}: a folder, not a {path.suffix} file (nor an artifact folder: it has no manifest.json)")
            artifact = read_artifact(path)
            targets.append(BenchTarget(str(path), path.name, path, artifact.manifest["format"], settings))
            continue
        if format_of(path) is None:
            if not path.exists():
                raise ValueError(f"{path}: no such file or folder")
            raise UsageError(
                f"{path}: edge-agent bench takes artifact folders (edge-export's) and model files ending in "
                f"{' or '.join(SUFFIXES)}, not {path.suffix or 'a file without a suffix'}"
            )
        model = read_model_file(path)
        try:
            resolved = resolve_input(model, given, args.batch_size)
            manifest = manifest_for(model, resolved, args.precision)
        except InputShapeError as exc:
            raise UsageError(str(exc)) from None
        misfits += [resolved.input_shape_misfit] if resolved.input_shape_misfit else []
        own = {**settings, "batch_size": resolved.batch_size} if resolved.batch_size else settings
        try:
            BenchmarkSettings.from_mapping(own)
        except InvalidSettings as exc:
            raise UsageError(f"{path}: {exc}") from None
        folder = stage_model_file(model, manifest, scratch / str(i))
        targets.append(BenchTarget(str(path), path.name, folder, model.format, own, model_file=True))
    files = [t for t in targets if t.model_file]
    if (args.input_shape is not None or args.precision) and not files:
        raise UsageError("--input-shape and --precision are for model files (.onnx, .pte); artifact folders carry their own")
    if misfits and len(misfits) == len(files):
        raise UsageError(f"--input-shape fits none of the model files: {misfits[0]}")
    return targets


def bench_artifact(
    client: Any,
    sha256: str,
    settings: dict[str, Any],
    *,
    eval_set: Path | None = None,
    eval_reference: Path | None = None,
    run_id: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Benchmark an artifact already on the device, optionally evaluating it there on an evaluation set: the
    folders ``edge_opt.evalset.publish`` writes (``evalset.npz`` + ``manifest.json``), inputs and labels in
    ``eval_set``, the host's outputs in ``eval_reference``. They are pushed like artifacts (only what the device
    lacks) and named to the run; its result then has an ``evaluation``. Returns the run's terminal event.

    Raises:
        DeviceCallError: the device refused a push or the run, or cannot be reached.
        ValueError: an evaluation-set folder that is not one (or a reference without its set).
    """
    from edge_agent.contract.formats import EVALSET_FORMAT as FORMAT
    from edge_agent.contract.manifest import read_artifact

    shas: dict[str, str] = {}
    if eval_reference is not None and eval_set is None:
        raise ValueError(f"{eval_reference}: reference outputs need the evaluation set they were computed on")
    for key, folder in (("eval_set_sha256", eval_set), ("eval_reference_sha256", eval_reference)):
        if folder is None:
            continue
        if read_artifact(folder).manifest["format"] != FORMAT:
            raise ValueError(f"{folder}: not an evaluation set (its manifest's format is not {FORMAT!r})")
        shas[key] = client.push(folder).sha256
    last: dict[str, Any] = {}
    for event in client.bench(sha256, settings, run_id=run_id, **shas):
        last = event
        if on_event is not None:
            on_event(event)
    return last


def _progress_printer(name: str) -> Callable[[dict[str, Any]], None]:
    def show(event: dict[str, Any]) -> None:
        if "progress" in event:
            p = event["progress"]
            print(f"\r{name}: {p['phase']} {p['done']}/{p['total']}   ", end="", file=sys.stderr, flush=True)
        elif "queue_position" in event:
            print(f"{name}: queued (position {event['queue_position']})", file=sys.stderr)

    return show


def _bench(args: argparse.Namespace) -> int:
    """``edge-agent bench``: every argument checked on the host (nothing is sent before), then each pushed and run."""
    if args.run_id and len(args.artifacts) > 1:
        raise UsageError("--run-id names one run: give one artifact")
    settings = bench_settings(args)
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as scratch:
        targets = bench_targets(args, settings, Path(scratch))
        attach_evaluation(args, targets, Path(scratch))
        with make_client(args) as client:
            entries, device_error = _bench_all(args, client, targets)
    return _bench_outcome(args, entries, device_error)


def _bench_all(args: argparse.Namespace, client: Any, targets: list[BenchTarget]) -> tuple[list[dict[str, Any]], Any]:
    """Push and run every target; each gets its result or its named failure. An artifact whose runtime the device
    lacks is not pushed (``skipped``, with the reason); a refusal of one artifact's push or run is its ``error``
    and the others still run; a failure of the device as a whole ends the work, naming the rest as not run.
    Returns the entries and the device-wide failure, if any."""
    from edge_agent.contract.formats import missing_runtime
    from edge_agent.host.client import DeviceCallError

    entries: list[dict[str, Any]] = []
    try:
        runtimes = [r.get("name", "") for r in client.info().get("runtimes", [])]
    except DeviceCallError as exc:
        not_run = {"code": exc.code, "message": f"not run: {exc}"}
        return [{"artifact": t.label, "state": "NOT_RUN", "error": not_run} for t in targets], exc
    stopped: Any = None
    for target in targets:
        entry: dict[str, Any] = {"artifact": target.label}
        if stopped is not None:
            earlier = {"code": stopped.code, "message": f"not run: the device failed earlier: {stopped}"}
            entry.update(state="NOT_RUN", error=earlier)
        elif reason := missing_runtime(target.format, runtimes):
            entry["skipped"] = reason
        else:
            try:
                pushed = client.push(target.folder)
                entry["sha256"] = pushed.sha256
                show = None if args.json else _progress_printer(target.name)
                entry.update(
                    bench_artifact(
                        client,
                        pushed.sha256,
                        target.settings,
                        eval_set=target.eval_set,
                        eval_reference=target.eval_reference,
                        run_id=args.run_id,
                        on_event=show,
                    )
                )
            except DeviceCallError as exc:
                state = "UNREACHABLE" if exc.device_wide else "REFUSED"
                entry.update(state=state, error={"code": exc.code, "message": exc.details})
                stopped = exc if exc.device_wide else None
        entries.append(entry)
        if not args.json:
            print("\r", end="", file=sys.stderr)
            print(f"{target.name}: not run: {entry['skipped']}" if "skipped" in entry else format_result_line(target.name, entry))
    return entries, stopped


def _bench_outcome(args: argparse.Namespace, entries: list[dict[str, Any]], device_error: Any) -> int:
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
        _print(args, entries, "", code, errors)
    return code
