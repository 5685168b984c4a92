"""Evaluation sets for any artifact or model file (``edge-agent bench FILE --data SOURCE``): the user's data,
preprocessed for the model's input, and the host's outputs on it, as the folders a device evaluates with.

The evaluation half of the data is used (``val/`` of a split folder, ``split="eval"`` of a factory, else all of
it), its first ``samples`` items (an image folder's shuffled with the seed first, so they hold every class). An
artifact of edge-export's brings its own preprocessing (its manifest's); a model file takes the flags'. The host's
outputs come from the file run on this host with its own runtime (ONNX Runtime, ExecuTorch or TorchScript), so the
device reports how far it is from them (agreement, SQNR) and, with labels, its own top-1.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_opt import evalset
from edge_opt.data.preprocessing import PREPROCESSED, Preprocessing
from edge_opt.data.readers import open_source
from edge_opt.errors import DataError

#: Items evaluated on the device unless asked otherwise.
DEFAULT_SAMPLES = 1000


@dataclass(frozen=True)
class DeviceSets:
    """The folders to push: inputs (+ labels), and the host's reference outputs when they could be computed."""

    inputs: Path
    reference: Path | None
    samples: int
    labelled: bool
    description: str


def preprocessing_for(
    shape: Sequence[Any],
    manifest_preprocessing: dict[str, Any] | None,
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    resize: tuple[int, ...] | None,
    stored: str,
) -> Preprocessing:
    """The artifact's own preprocessing (edge-export's manifest), else one made for the model's input shape."""
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        raise DataError(
            f"--data feeds images, one (C, H, W) input per item; this model takes {list(shape)}: evaluate it with "
            "your own code, or give a model whose input is (batch, channels, height, width)"
        )
    channels, height, width = (int(d) for d in shape[1:])
    if channels not in (1, 3):
        raise DataError(f"--data feeds images of 1 or 3 channels; this model takes {channels}")
    if manifest_preprocessing and mean is None and std is None and resize is None:
        p = manifest_preprocessing
        try:
            resize_to = tuple(p["resize_to"]) if p.get("resize_to") else None
            values: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in p.items() if k in ("mean", "std", "scale")
            }
            return Preprocessing(height, width, channels, resize_to=resize_to, source=stored, **values)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"the artifact's manifest records a preprocessing this host cannot apply ({exc}): re-export the artifact, "
                "or give --mean / --std / --resize"
            ) from None
    normalisation: dict[str, Any] = {"mean": 0.0, "std": 1.0}
    for key, value in (("mean", mean), ("std", std)):
        if value is not None:
            normalisation[key] = float(value[0]) if len(value) == 1 else tuple(float(v) for v in value)
    try:
        return Preprocessing(height, width, channels, resize_to=resize, source=stored, **normalisation)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def device_sets(
    source: str,
    shape: Sequence[Any],
    out: Path,
    *,
    manifest_preprocessing: dict[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resize: tuple[int, ...] | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    run: Callable[[np.ndarray], np.ndarray] | None = None,
) -> DeviceSets:
    """Write the evaluation set (and, with ``run``, the host's reference outputs) under ``out/evalsets``.

    Raises:
        DataError: the data cannot be read or does not fit the model's input.
    """
    import torch

    opened = open_source(source, "eval")
    if len(opened) == 0:
        raise DataError(f"the data {opened.where} is empty: give it items")
    p = preprocessing_for(shape, manifest_preprocessing, mean=mean, std=std, resize=resize, stored=opened.stored)
    order = torch.randperm(len(opened), generator=torch.Generator().manual_seed(seed + 1))
    index = order if opened.files is not None else torch.arange(len(opened))
    item_bytes = 4 * p.channels * p.height * p.width
    n = evalset.samples_for(samples, len(opened), item_bytes)
    if n == 0:
        raise DataError(
            f"one input of this model is {item_bytes / 2**20:.0f} MiB, more than an evaluation set may hold "
            f"({evalset.MAX_INPUT_BYTES >> 20} MiB): give a smaller input shape"
        )
    split = opened.materialise(index[:n], p, "evaluation")
    if split.images.is_floating_point() and p.source != PREPROCESSED:
        raise DataError("the data holds float inputs: they are taken as already preprocessed")
    inputs = np.concatenate([x.numpy() for x, _ in split.batches(p, 64)]).astype(np.float32)
    arrays: dict[str, np.ndarray] = {"inputs": inputs}
    if split.labels is not None:
        arrays["labels"] = split.labels.numpy().astype(np.int64)
    description = {"dataset": f"{opened.kind} {opened.where}", "first": n, "preprocessing": p.to_manifest()}
    record = evalset.publish(out, arrays, description)
    reference = None
    if run is not None:
        try:
            outputs = np.concatenate([np.asarray(run(inputs[i : i + 64]), dtype=np.float32) for i in range(0, n, 64)])
        except Exception as exc:  # the runtime's own error (a shape, a type the model refuses on this data)
            first = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise DataError(f"the model fails on this data on this host: {first}") from None
        ref = evalset.publish(out, {"reference": outputs.reshape(n, -1)}, {"artifact": "host outputs"})
        reference = out / evalset.FOLDER / ref["sha256"]
        if split.labels is not None and outputs.ndim == 2 and int(split.labels.max()) >= outputs.shape[1]:
            raise DataError(
                f"the data has labels up to {int(split.labels.max())}, the model gives {outputs.shape[1]} outputs per item: "
                "labels must be class indices 0..outputs-1"
            )
    return DeviceSets(out / evalset.FOLDER / record["sha256"], reference, n, split.labels is not None, opened.where)


def host_runner(model: Path, fmt: str, dtype: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """The model file run on this host with its own runtime; None when that runtime is not installed here."""
    if fmt == "onnx":
        from edge_agent.runtimes.base import fixed_batches
        from edge_agent.runtimes.onnx_session import input_spec, open_session

        session = open_session(str(model))
        name, shape, _ = input_spec(session)

        def call(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: x.astype(dtype, copy=False)})[0]

        # A file that fixes its batch takes exactly that many items, as the device feeds it.
        fixed = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else 0
        return fixed_batches(call, fixed) if fixed else call
    if fmt == "executorch":
        from edge_agent.runtimes.executorch_program import executorch_available, load

        if not executorch_available():
            return None
        program = load(str(model))
        return lambda x: np.concatenate([np.asarray(program.call(x[i : i + 1].astype(dtype))) for i in range(len(x))])
    if fmt == "litert":
        from edge_agent.runtimes.litert import load as load_litert

        if importlib.util.find_spec("ai_edge_litert") is None:
            return None
        lite = load_litert(str(model))  # the device's runner: int8 inputs quantized, outputs dequantized, any batch
        return lambda x: lite(x.astype(np.float32, copy=False))
    if fmt == "torchscript":
        import torch

        module = torch.jit.load(str(model)).eval()

        def call(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x.astype(dtype))).float().numpy()

        return call
    return None


def manifest_preprocessing(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = manifest.get("preprocessing")
    return record if isinstance(record, dict) and "mean" in record else None
