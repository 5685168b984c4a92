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
the ordinary content-addressed push (sha256, resume, quota, dedup). :func:`check_file` (here) runs in the store before an
evaluation set becomes visible; :func:`edge_agent.worker.evaluation.evaluate` runs in the benchmark worker *after*
the timed loop, in the same process and with the same session, so it cannot disturb the latency figures.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

from edge_agent.contract.errors import ArtifactRejected

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
