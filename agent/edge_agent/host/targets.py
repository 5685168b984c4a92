"""What ``edge-agent bench`` benchmarks, checked on the host before anything is sent: each argument (an artifact
folder, or a ``.onnx`` / ``.pte`` file staged as one) as a :class:`BenchTarget`, and with ``--data`` the evaluation
sets made from the user's data for each (read and preprocessed by the toolchain, when it is installed)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.contract.errors import InvalidSettings
from edge_agent.contract.manifest import read_artifact
from edge_agent.contract.settings import BenchmarkSettings
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
from edge_agent.host.output import DataProblem, UsageError


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
        raise UsageError("--input-shape and --precision are for model files (.onnx .pte .tflite); folders carry their own")
    if misfits and len(misfits) == len(files):
        raise UsageError(f"--input-shape fits none of the model files: {misfits[0]}")
    return targets



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
    try:  # the toolchain is optional beside the agent (it brings torch): imported only when --data asks for it
        from edge_opt.data.device_sets import DEFAULT_SAMPLES, device_sets, host_runner, manifest_preprocessing
        from edge_opt.errors import ToolchainError
    except ImportError:
        raise UsageError(
            "--data reads and preprocesses your data with the toolchain: install it beside the agent "
            "(pip install 'edge-opt[toolchain]'), or leave --data out"
        ) from None
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

