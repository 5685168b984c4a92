"""Device-side evaluation: the device checks the outputs it computes, on a small labelled set the host pushed.

An *evaluation set* is an artifact of manifest ``format: evalset`` whose file is an uncompressed or deflated
``.npz`` (a zip of ``.npy`` arrays, never pickles) with some of:

* ``inputs``: float32 ``(N, ...)``, the model's input exactly as it takes it (preprocessed on the host);
* ``labels``: int64 or int32 ``(N,)``, the true classes (absent for unlabelled data: then only the agreement
  with the host's outputs is measured);
* ``reference``: float32 ``(N, C)``, the host's outputs for those inputs (evaluated with the artifact's own
  semantics; one flattened row per item), to measure agreement, fidelity (SQNR) and the largest difference.

The inputs and labels are the same for every artifact of an export, so they travel once per device; the reference
outputs are per artifact and travel as a second, small evaluation set holding only ``reference``. Both go through
the ordinary content-addressed push (sha256, resume, quota, dedup). :func:`check_file` runs in the store before an
evaluation set becomes visible; :func:`evaluate` runs in the benchmark worker *after* the timed loop, in the same
process and with the same session, so it cannot disturb the latency figures.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.contract.errors import ArtifactNotFound, ArtifactRejected

FORMAT = "evalset"
FILE_NAME = "evalset.npz"
#: Members an evaluation set may hold, and the dtypes each may have.
MEMBERS: dict[str, tuple[str, ...]] = {
    "inputs.npy": ("<f4",),
    "labels.npy": ("<i8", "<i4"),
    "reference.npy": ("<f4",),
}
#: Bounds: items in one set, total uncompressed bytes, and the compression ratio of any member (zip bombs).
MAX_ITEMS = 10_000
MAX_UNCOMPRESSED_BYTES = 256 << 20
MAX_COMPRESSION_RATIO = 200
#: Images per call when the worker evaluates (bounds the worker's extra memory to one batch of outputs).
EVAL_BATCH = 100
#: What reading a damaged member raises (a bad CRC, a broken deflate stream, a member cut short).
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError)


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[str, tuple[int, ...]]:
    """dtype string and shape from an ``.npy`` member's header, reading only its first bytes."""
    from numpy.lib import format as npformat

    with archive.open(info) as fh:
        try:
            version = npformat.read_magic(fh)
            reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
        except (ValueError, OSError, *_DAMAGED) as exc:
            raise ArtifactRejected(f"evaluation set member {info.filename} is not a valid .npy array: {exc}") from None
    if fortran or dtype.hasobject or any(d < 0 for d in shape):
        raise ArtifactRejected(f"evaluation set member {info.filename} must be a C-ordered numeric array of sizes >= 0")
    expected = math.prod(shape) * dtype.itemsize  # Python integers: a product of huge sizes cannot wrap around
    if info.file_size < expected:
        raise ArtifactRejected(f"evaluation set member {info.filename} is shorter than its header says")
    return dtype.str, tuple(int(d) for d in shape)


def check_file(path: Path) -> dict[str, tuple[int, ...]]:
    """Refuse anything but a small, well-formed evaluation set; returns each member's shape.

    Cheap and safe: only the zip directory and each array's header are read (no data is decompressed, nothing
    is unpickled); sizes, compression ratios and shapes are bounded before the worker ever loads it.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise ArtifactRejected("an evaluation set must be an .npz (zip) file; this one is not") from None
    with archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        unknown = sorted(set(names) - set(MEMBERS))
        if unknown or len(names) != len(set(names)) or not names:
            raise ArtifactRejected(f"an evaluation set holds only {', '.join(sorted(MEMBERS))}, once each; got {names}")
        if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED_BYTES:
            raise ArtifactRejected(f"an evaluation set may hold at most {MAX_UNCOMPRESSED_BYTES >> 20} MiB uncompressed")
        shapes: dict[str, tuple[int, ...]] = {}
        for info in infos:
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
                raise ArtifactRejected(f"evaluation set member {info.filename}: only stored or deflated, unencrypted")
            if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1) + 4096:
                raise ArtifactRejected(f"evaluation set member {info.filename} is compressed implausibly well")
            dtype, shape = _npy_header(archive, info)
            key = info.filename.removesuffix(".npy")
            if dtype not in MEMBERS[info.filename]:
                raise ArtifactRejected(f"evaluation set {key} must have dtype {' or '.join(MEMBERS[info.filename])}, not {dtype}")
            shapes[key] = shape
    counts = {key: shape[0] if shape else -1 for key, shape in shapes.items()}
    if len(set(counts.values())) != 1 or not 0 < next(iter(counts.values())) <= MAX_ITEMS:
        raise ArtifactRejected(f"evaluation set arrays must share a first dimension of 1..{MAX_ITEMS}; got {counts}")
    if "labels" in shapes and len(shapes["labels"]) != 1:
        raise ArtifactRejected("evaluation set labels must be one-dimensional")
    if "reference" in shapes and len(shapes["reference"]) != 2:
        raise ArtifactRejected("evaluation set reference outputs must be two-dimensional (items, outputs)")
    if "labels" in shapes and "inputs" not in shapes:
        raise ArtifactRejected("evaluation set labels need inputs")
    return shapes


def resolve(store: Any, sha256: str, member: str) -> str:
    """The committed evaluation set ``sha256`` in ``store`` (checked at submit time); '' when none was asked for.

    Raises:
        ArtifactNotFound: the device does not have it.
        ArtifactRejected: it is not an evaluation set.
    """
    if not sha256:
        return ""
    meta = store.get(sha256)
    if meta is None:
        raise ArtifactNotFound(f"evaluation set {sha256} is not on this device; push it first")
    if meta.format != FORMAT:
        raise ArtifactRejected(f"{member} {sha256} is an artifact of format {meta.format}, not an evaluation set")
    return sha256


def worker_paths(store: Any, settings: dict[str, Any]) -> dict[str, str]:
    """The files the worker evaluates with, from a run's settings; a deleted set is reported by the worker."""
    paths = {}
    for key in ("eval_set_sha256", "eval_reference_sha256"):
        sha = settings.get(key) or ""
        if sha:
            paths[key.removesuffix("_sha256")] = str(store.artifacts_dir / sha / FILE_NAME)
    return paths


def fixed_batches(call: Callable[[Any], Any], batch: int) -> Callable[[Any], Any]:
    """``call`` for a model that takes exactly ``batch`` items (an ONNX file with a fixed batch), over any number of
    items: ``batch`` at a time, the last slice padded with zeros and the padding's outputs dropped."""
    import numpy as np

    def sliced(x: Any) -> Any:
        outputs = []
        for start in range(0, len(x), batch):
            part = x[start : start + batch]
            items = len(part)
            if items < batch:
                part = np.concatenate([part, np.zeros((batch - items, *part.shape[1:]), part.dtype)])
            outputs.append(np.asarray(call(np.ascontiguousarray(part)))[:items])
        return np.concatenate(outputs)

    return sliced


def evaluate(call: Callable[[Any], Any], paths: dict[str, str], dtype: str, item_shape: list[int]) -> dict[str, Any]:
    """Run the model on the evaluation set; accuracy, agreement with the host and the largest output difference.

    Never raises for a bad set: the benchmark's figures stand, and the evaluation says what went wrong.
    """
    import numpy as np

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
    import math

    if noise == 0.0:
        return SQNR_IDENTICAL_DB
    if signal == 0.0 or not math.isfinite(noise):
        return -1000.0  # no signal, or non-finite outputs: as far from the reference as can be said
    return min(SQNR_IDENTICAL_DB, 10.0 * math.log10(signal / noise))
