"""Device-side evaluation in the worker: after the timed loop, with the same session, the model runs on the
evaluation set the host pushed (inputs, labels, the host's reference outputs; the format and the store's check
are in :mod:`edge_agent.store.evalsets`) and the agreement, accuracy and fidelity are measured."""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Images per call when the worker evaluates (bounds the worker's extra memory to one batch of outputs).
EVAL_BATCH = 100
#: What reading a damaged member raises (a bad CRC, a broken deflate stream, a member cut short).
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError)


def evaluate(call: Callable[[Any], Any], paths: dict[str, str], dtype: str, item_shape: list[int]) -> dict[str, Any]:
    """Run the model on the evaluation set; accuracy, agreement with the host and the largest output difference.

    Never raises for a bad set: the benchmark's figures stand, and the evaluation says what went wrong.
    """
    import numpy as np  # numpy is imported in the worker only when a set is evaluated

    sha = Path(paths.get("eval_set", "")).parent.name
    out: dict[str, Any] = {"eval_set_sha256": sha}
    try:
        with np.load(paths["eval_set"], allow_pickle=False) as data:
            inputs = np.asarray(data["inputs"])
            labels = np.asarray(data["labels"]).astype(np.int64) if "labels" in data.files else None
        reference = None
        if paths.get("eval_reference"):
            with np.load(paths["eval_reference"], allow_pickle=False) as data:
                reference = np.asarray(data["reference"], dtype=np.float32)
    except (OSError, KeyError, ValueError, MemoryError, *_DAMAGED) as exc:
        return {**out, "error": f"cannot read the evaluation set: {type(exc).__name__}: {exc}"}
    if list(inputs.shape[1:]) != list(item_shape):
        return {**out, "error": f"evaluation inputs have shape {list(inputs.shape[1:])}, the model takes {item_shape}"}
    if reference is not None and reference.shape[0] != inputs.shape[0]:
        return {**out, "error": "the reference outputs do not match the evaluation set's size"}
    if reference is not None and not np.isfinite(reference).all():
        return {**out, "error": "the reference outputs hold NaN or infinite values: compute them again on the host"}
    n = int(inputs.shape[0])
    correct = agree = 0
    max_diff = signal = noise = 0.0
    for start in range(0, n, EVAL_BATCH):
        try:
            y = np.asarray(call(inputs[start : start + EVAL_BATCH].astype(dtype, copy=False)), dtype=np.float32)
            y = y.reshape(y.shape[0], -1)
        except Exception as exc:  # the model cannot run on these items: the timing stands, the evaluation says why
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            return {**out, "error": f"the model failed on evaluation items {start}..: {type(exc).__name__}: {first}"}
        items = min(EVAL_BATCH, n - start)
        if y.shape[0] != items or y.shape[1] == 0:
            rows = f"{y.shape[0]} rows of {y.shape[1]} outputs for {items} evaluation items"
            return {**out, "error": f"the model gives {rows}; evaluation needs one row of outputs per item"}
        if not np.isfinite(y).all():
            return {**out, "error": f"the model's outputs on evaluation items {start}.. hold NaN or infinite values"}
        predicted = y.argmax(axis=1)
        if labels is not None:
            correct += int((predicted == labels[start : start + EVAL_BATCH]).sum())
        if reference is not None:
            ref = reference[start : start + EVAL_BATCH]
            if ref.shape != y.shape:
                shapes = f"{list(ref.shape[1:])}, the model gives {list(y.shape[1:])}"
                return {**out, "error": f"reference outputs have shape {shapes}"}
            agree += int((predicted == ref.argmax(axis=1)).sum())
            diff = np.abs(y.astype(np.float64) - ref.astype(np.float64))
            max_diff = max(max_diff, float(diff.max()) if np.isfinite(diff).all() else float("inf"))
            signal += float(np.square(ref.astype(np.float64)).sum())
            noise += float(np.square(diff).sum()) if np.isfinite(diff).all() else float("inf")
    out.update(samples=n, has_reference=reference is not None)
    if labels is not None:
        out["top1_accuracy"] = correct / n
    if reference is not None:
        out.update(agreement_with_host=agree / n, max_abs_diff=max_diff, sqnr_db=_sqnr_db(signal, noise))
    return out


#: SQNR reported for outputs identical to the reference.
SQNR_IDENTICAL_DB = 200.0


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return SQNR_IDENTICAL_DB
    if signal == 0.0 or not math.isfinite(noise):
        return -1000.0  # no signal, or non-finite outputs: as far from the reference as can be said
    return min(SQNR_IDENTICAL_DB, 10.0 * math.log10(signal / noise))
