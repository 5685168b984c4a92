"""The user's data in the forms users keep it: an image folder, an ``.npz`` of arrays, a Python factory.

Each reader *opens* a source (lists its image files, or loads its arrays) and returns a :class:`Source`; pixels
of image files are decoded only later, by :meth:`Source.materialise`, once the model's channels and input size
are known, and only for the items an export needs. Every problem is a :class:`~edge_opt.errors.DataError` (exit
3) naming the file or folder and the fix.

* **Image folder** (torchvision's ``ImageFolder`` layout): one subfolder per class, class indices in sorted
  folder-name order, exactly as ``torchvision.datasets.ImageFolder`` assigns them. Any image Pillow reads.
* **``.npz``**: ``x`` holds uint8 images ``(N, H, W)`` / ``(N, H, W, C)`` (preprocessed later with the
  export's settings) or float32 inputs ``(N, C, H, W)`` already preprocessed; ``y`` (optional) int labels;
  ``classes`` (optional) class names. Never unpickled.
* **Factory** ``package.module:function``: returns a ``torch.utils.data.Dataset`` or an iterable of
  ``(input, label)`` pairs (or inputs alone); an input is a float tensor / array ``(C, H, W)`` already
  preprocessed, a uint8 array ``(H, W[, C])``, or a PIL image. A factory taking a ``split`` argument is called
  with ``split="train"`` and ``split="eval"``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_opt import progress
from edge_opt.data.preprocessing import IMAGES, PREPROCESSED, UINT8_ARRAY, Preprocessing
from edge_opt.data.split import Split
from edge_opt.errors import DataError

#: File suffixes read as images (torchvision's ``IMG_EXTENSIONS``), compared case-insensitively.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Names of the evaluation subfolder beside ``train/``, in the order they are looked for.
EVAL_FOLDERS = ("val", "test")
#: Items a factory may yield (the data is held in memory).
MAX_FACTORY_ITEMS = 1_000_000
#: Threads that decode image files (Pillow releases the GIL while decoding); None: min(8, cores).
DECODE_THREADS: int | None = None
#: An ``.npz`` member larger than this (uncompressed) may not be compressed better than ``MAX_NPZ_RATIO``: a zip
#: bomb (a few MB of zeros that decompress to gigabytes) is refused before numpy allocates it.
NPZ_RATIO_FROM_BYTES = 256 << 20
MAX_NPZ_RATIO = 200


@dataclass
class Source:
    """One opened source: arrays in memory, or image files still to decode."""

    kind: str  # "image-folder" | "npz" | "factory"
    where: str
    labels: torch.Tensor | None
    class_names: tuple[str, ...] | None
    images: torch.Tensor | None = None  # arrays (npz, factory)
    files: list[Path] | None = None  # image files (image folder), decoded by materialise
    stored: str = UINT8_ARRAY  # what the stored images are (edge_opt.data.preprocessing)

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else int(self.images.shape[0])  # type: ignore[union-attr]

    def materialise(self, index: torch.Tensor, preprocessing: Preprocessing, what: str) -> Split:
        """The items at ``index`` as a :class:`Split` (image files decoded to the model's channels and size)."""
        labels = None if self.labels is None else self.labels[index]
        if self.files is None:
            images = self.images[index]  # type: ignore[index]
            if not images.is_floating_point() and (preprocessing.resize_to or tuple(images.shape[1:3]) != preprocessing.size):
                images = resize_arrays(images, preprocessing)
            return Split(images, labels)
        files = [self.files[int(i)] for i in index]
        return Split(decode_images(files, preprocessing, what), labels)


def open_source(spec: str, role: str) -> Source:
    """Open ``spec`` (a folder, an ``.npz`` or ``package.module:function``) for ``role`` ("train" / "eval" / "all").

    A folder with ``train/`` and ``val/`` (or ``test/``) gives ``train/`` for "train" and the other for "eval";
    "all" asks for the whole folder (the caller splits it).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        folder = split_folder(path, role)
        return open_image_folder(folder or path)
    if path.suffix.lower() == ".npz" or path.is_file():
        if not path.is_file():
            raise DataError(f"data file {path} does not exist; check the path given to --data")
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path} is not an .npz; --data takes an image folder, an .npz or package.module:function")
        return open_npz(path)
    if ":" in spec and not path.exists():
        return open_factory(spec, role)
    raise DataError(
        f"data {spec!r} does not exist: --data takes an image folder (one subfolder per class), an .npz file "
        "(arrays x and optionally y) or package.module:function returning a dataset"
    )


def split_folder(path: Path, role: str) -> Path | None:
    """The subfolder of a ``train/`` + ``val/`` (or ``test/``) layout for ``role``; None for a plain class folder."""
    subfolders = {p.name for p in path.iterdir() if p.is_dir()}
    evals = [name for name in EVAL_FOLDERS if name in subfolders]
    if "train" not in subfolders or not evals:
        return None
    if role == "all":
        return None  # the caller asks for both halves through "train" and "eval"
    return path / ("train" if role == "train" else evals[0])


def splits_itself(spec: str) -> bool:
    """A folder with ``train/`` and ``val/`` (or ``test/``), or a factory taking ``split``: it gives both halves."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return split_folder(path, "train") is not None
    if ":" in spec and not path.exists():
        return _takes_split(_import_factory(spec))
    return False


def _import_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"cannot import data factory {spec!r} ({exc}): check the module is on PYTHONPATH") from None
    except Exception as exc:  # the user's module failed while importing
        raise DataError(f"importing data factory {spec!r} raised {type(exc).__name__}: {exc}") from None


def _takes_split(factory: Any) -> bool:
    try:
        return "split" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def open_image_folder(root: Path) -> Source:
    try:
        return _open_image_folder(root)
    except OSError as exc:  # a symbolic link loop, an unreadable entry
        what = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)
        raise DataError(f"cannot read image folder {root} ({what}): fix or remove that entry") from None


def _open_image_folder(root: Path) -> Source:
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())  # torchvision's find_classes
    if not classes:
        raise DataError(
            f"image folder {root} has no class subfolders: put each class's images in a subfolder named after it "
            "(root/cat/1.png, root/dog/2.png), torchvision's ImageFolder layout"
        )
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = sorted(
            p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not found:
            raise DataError(
                f"class folder {root / name} has no images ({', '.join(IMAGE_SUFFIXES)}): add its images or remove the folder"
            )
        files += found
        labels += [index] * len(found)
    return Source("image-folder", str(root), torch.tensor(labels, dtype=torch.int64), tuple(classes), files=files, stored=IMAGES)


def decode_images(files: list[Path], preprocessing: Preprocessing, what: str) -> torch.Tensor:
    """Decode image files in parallel into uint8 ``(N, H, W, C)`` at the model's size (resize, center-crop)."""
    if not files:
        return torch.zeros((0, preprocessing.height, preprocessing.width, preprocessing.channels), dtype=torch.uint8)
    from PIL import Image

    workers = DECODE_THREADS or min(8, os.cpu_count() or 1)
    # Pillow only warns about an image over its decompression-bomb threshold (up to twice that) and decodes it: a
    # small PNG declaring 13000x13000 takes a gigabyte. Here that is an error, for the decoding threads' lifetime.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=workers) as pool:
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        decoded = list(
            progress.track(
                pool.map(lambda p: decode_image(p, preprocessing), files), f"decoding {len(files):,} {what} images", len(files)
            )
        )
    return torch.from_numpy(np.stack(decoded))


def decode_image(path: Path, preprocessing: Preprocessing) -> np.ndarray:
    """One image as uint8 ``(H, W, C)``: converted to the model's channels, resized as torchvision's ``Resize``
    (a single size: the shorter side; two: exactly), center-cropped to the input size."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            converted = image.convert("L" if preprocessing.channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read image {path} ({reason}): replace or remove the file") from None
    return fit_image(converted, preprocessing)


def _check_pixels(height: int, width: int, what: str, fix: str) -> None:
    """Refuse an image size over Pillow's decompression-bomb threshold (a resize to it would allocate it all)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit and height * width > limit:
        raise DataError(f"{what} is {height}x{width} ({height * width:,} pixels), more than {limit:,}: {fix}")


def fit_image(image: Any, preprocessing: Preprocessing) -> np.ndarray:
    from PIL import Image

    h, w = preprocessing.height, preprocessing.width
    target = resized_size(image.height, image.width, preprocessing.resize_to or (h, w))
    _check_pixels(*target, f"an image of {image.height}x{image.width} resized", "give a smaller --resize or input size")
    if (image.height, image.width) != target:
        image = image.resize((target[1], target[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[0] < h or array.shape[1] < w:
        raise DataError(f"an image resized to {array.shape[0]}x{array.shape[1]} is smaller than the input {h}x{w}")
    top, left = round((array.shape[0] - h) / 2), round((array.shape[1] - w) / 2)
    return np.ascontiguousarray(array[top : top + h, left : left + w])


def resize_arrays(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 arrays of another size, resized and center-cropped exactly as image files are (Pillow's bilinear,
    torchvision's ``Resize`` on PIL images), so that one preprocessing record describes both."""
    from PIL import Image

    arrays = images.numpy()
    if arrays.ndim == 4 and arrays.shape[-1] == 1:
        arrays = arrays[..., 0]
    fitted = [fit_image(Image.fromarray(np.ascontiguousarray(a)), preprocessing) for a in arrays]
    return torch.from_numpy(np.stack(fitted)) if fitted else images


def resized_size(height: int, width: int, size: tuple[int, ...]) -> tuple[int, int]:
    """torchvision's ``Resize`` rule: one value sets the shorter side (aspect kept), two set both sides."""
    if len(size) == 2:
        return (size[0], size[1])
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size[0], int(size[0] * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def open_npz(path: Path) -> Source:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path} as .npz ({exc}): save it with numpy.savez(path, x=..., y=...)") from None
    with archive:
        _check_members(archive.zip, path)
        names = list(archive.files)
        if "x" not in names:
            raise DataError(
                f"{path} has no array named x (it has: {', '.join(names) or 'nothing'}): save it with "
                "numpy.savez(path, x=images, y=labels)"
            )
        try:
            x = np.asarray(archive["x"])
            y = np.asarray(archive["y"]) if "y" in names else None
            classes = np.asarray(archive["classes"]) if "classes" in names else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"cannot read the arrays of {path} ({exc}); object arrays are never unpickled") from None
        except MemoryError:
            raise DataError(f"the arrays of {path} do not fit in this host's memory: use a smaller .npz") from None
    images, stored = _images_from_array(x, f"{path} x")
    labels = _labels(y, len(images), f"{path} y") if y is not None else None
    names_of = None
    if classes is not None:
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            raise DataError(f"{path} classes must be a 1-D array of strings (one name per class)")
        names_of = tuple(str(c) for c in classes)
    return Source("npz", str(path), labels, names_of, images=images, stored=stored)


def _check_members(archive: zipfile.ZipFile, path: Path) -> None:
    """Before numpy allocates anything: each member's header declares no more bytes than the member holds, a large
    member is not compressed implausibly well (a zip bomb), and the arrays fit in the memory this host has free."""
    from numpy.lib import format as npformat

    total = 0
    for info in archive.infolist():
        total += info.file_size
        what = f"{path} member {info.filename}"
        if info.file_size > max(NPZ_RATIO_FROM_BYTES, MAX_NPZ_RATIO * info.compress_size):
            raise DataError(
                f"{what} decompresses to {info.file_size / 2**30:.1f} GiB from {info.compress_size / 2**20:.1f} MiB, a "
                f"ratio over {MAX_NPZ_RATIO} (a zip bomb?): save real data with numpy.savez"
            )
        if not info.filename.endswith(".npy"):
            continue
        try:
            with archive.open(info) as fh:
                version = npformat.read_magic(fh)
                reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
                shape, _, dtype = reader(fh)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"cannot read {what} as a .npy array ({exc}): save it with numpy.savez") from None
        if not dtype.hasobject and math.prod(shape) * dtype.itemsize > info.file_size:
            raise DataError(f"{what} declares shape {list(shape)[:8]} of {dtype} but holds {info.file_size} bytes: save it again")
    available = _available_memory()
    if available and total > available:
        raise DataError(
            f"{path} holds {total / 2**30:.1f} GiB of arrays, more than the {available / 2**30:.1f} GiB of memory this "
            "host has free: use a subset, or an image folder"
        )


def _available_memory() -> int:
    """MemAvailable in bytes (0 where /proc/meminfo does not say)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:  # noqa: PTH123
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _images_from_array(x: np.ndarray, what: str) -> tuple[torch.Tensor, str]:
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        if x.ndim == 4 and x.shape[-1] not in (1, 3):
            raise DataError(
                f"{what} has shape {list(x.shape)}: uint8 images are (N, H, W) or (N, H, W, C) with C 1 or 3 "
                "(channels last); float32 inputs are (N, C, H, W)"
            )
        return torch.from_numpy(np.ascontiguousarray(x)), UINT8_ARRAY
    if x.dtype.kind == "f" and x.ndim == 4:
        if not np.isfinite(x).all():
            raise DataError(f"{what} holds NaN or infinite values: clean the data")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), PREPROCESSED
    raise DataError(
        f"{what} has dtype {x.dtype} and shape {list(x.shape)}: give uint8 images (N, H, W) or (N, H, W, C), "
        "or float32 inputs (N, C, H, W) already preprocessed"
    )


def _labels(y: np.ndarray, n: int, what: str) -> torch.Tensor:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{what} must be a 1-D array of integer class indices, not {y.dtype} of shape {list(y.shape)}")
    if len(y) != n:
        raise DataError(f"{what} has {len(y)} labels for {n} inputs: give one label per input")
    if n and int(y.min()) < 0:
        raise DataError(f"{what} has a negative label ({int(y.min())}): labels are class indices 0..classes-1")
    return torch.from_numpy(y.astype(np.int64))


def open_factory(spec: str, role: str) -> Source:
    factory = _import_factory(spec)
    if not callable(factory):
        raise DataError(f"data factory {spec!r} is a {type(factory).__name__}, not a function: name a function")
    inputs, labels = [], []
    try:
        obj = factory(split="eval" if role == "eval" else "train") if _takes_split(factory) else factory()
        for count, item in enumerate(_iterate(obj, spec)):
            if count >= MAX_FACTORY_ITEMS:
                raise DataError(f"data factory {spec!r} yields more than {MAX_FACTORY_ITEMS:,} items: return a subset")
            x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) and len(item) == 2 else (item, None)
            inputs.append(x)
            labels.append(y)
    except DataError:
        raise
    except Exception as exc:  # the user's code failed: name it in one line (-v shows the traceback)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(f"data factory {spec!r} raised {type(exc).__name__}: {first}; fix the factory") from exc
    if not inputs:
        raise DataError(f"data factory {spec!r} returned no items: return a non-empty dataset")
    images, stored = _stack_inputs(inputs, spec)
    if all(y is None for y in labels):
        label_tensor = None
    elif any(y is None for y in labels):
        raise DataError(f"data factory {spec!r} gives labels for some items and not others: give all or none")
    else:
        try:
            given = np.asarray([int(y) for y in labels if y is not None])  # all given: checked above
            label_tensor = _labels(given, len(inputs), f"data factory {spec!r} labels")
        except (TypeError, ValueError):
            raise DataError(f"data factory {spec!r}: labels must be integer class indices") from None
    classes = getattr(obj, "classes", None)
    names_of = tuple(str(c) for c in classes) if isinstance(classes, (list, tuple)) and classes else None
    return Source("factory", spec, label_tensor, names_of, images=images, stored=stored)


def _iterate(obj: Any, spec: str) -> Iterable[Any]:
    if isinstance(obj, torch.utils.data.Dataset) and hasattr(obj, "__len__"):
        return (obj[i] for i in range(len(obj)))
    if isinstance(obj, (str, bytes)) or not isinstance(obj, Iterable):
        raise DataError(
            f"data factory {spec!r} returned {type(obj).__name__}: return a torch.utils.data.Dataset or an iterable "
            "of (input, label) pairs"
        )
    return obj


def _stack_inputs(inputs: list[Any], spec: str) -> tuple[torch.Tensor, str]:
    from PIL import Image

    first = inputs[0]
    if isinstance(first, Image.Image):
        arrays = [np.asarray(x.convert("RGB") if x.mode not in ("L", "RGB") else x, dtype=np.uint8) for x in inputs]
        arrays = [a[:, :, None] if a.ndim == 2 else a for a in arrays]
        if len({a.shape for a in arrays}) > 1:
            raise DataError(f"data factory {spec!r} returns PIL images of different sizes: resize them in the factory")
        return torch.from_numpy(np.stack(arrays)), IMAGES
    try:
        arrays = [x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]
        stacked = np.stack(arrays)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"data factory {spec!r}: inputs must be tensors or arrays of one shape, or PIL images ({exc})"
        ) from None
    if stacked.dtype.kind == "f" and stacked.ndim == 4:
        return _images_from_array(stacked, f"data factory {spec!r} inputs")
    if stacked.dtype == np.uint8 and stacked.ndim in (3, 4):
        return _images_from_array(stacked, f"data factory {spec!r} inputs")
    raise DataError(
        f"data factory {spec!r} yields inputs of dtype {stacked.dtype} and shape {list(stacked.shape[1:])}: give float "
        "tensors (C, H, W) already preprocessed, uint8 arrays (H, W[, C]) or PIL images"
    )

