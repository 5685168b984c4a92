"""How fast edge-opt reads a user's image folder: decode, convert, resize and center-crop, in parallel.

Writes N JPEG photos-like images (random smooth colour fields, 320×240, ten class folders) into a temporary folder,
then times what an export does with ``--data FOLDER --input-size 224 --resize 256``: list the folder, decode every
image once with Pillow, resize its shorter side to 256, center-crop 224×224 and stack them, then preprocess one
batch. Prints images per second for one decoding thread and for the default pool, and the CPU it ran on.

    python benchmarks/bench_data.py            # 2,000 images
    python benchmarks/bench_data.py --images 500
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from edge_agent.device.cpu import cpu_model
from PIL import Image


def write_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((320, 240), Image.Resampling.BICUBIC)
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.jpg", quality=90)


def time_load(root: Path, workers: int | None) -> tuple[float, int]:
    from edge_opt.data import loading, readers
    from edge_opt.data.preprocessing import IMAGES, Preprocessing

    readers.DECODE_THREADS = workers
    preprocessing = Preprocessing(224, 224, 3, mean=0.0, std=1.0, resize_to=(256,), source=IMAGES)
    started = time.perf_counter()
    plan = loading.open_data(str(root), None, None, val_fraction=0.2, seed=0)
    assert plan is not None
    dataset = plan.load(preprocessing, train_limit=None, eval_limit=None)
    next(dataset.eval.batches(preprocessing, 64))
    elapsed = time.perf_counter() - started
    return elapsed, len(dataset.train) + len(dataset.eval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root, args.images)
        print(f"{args.images:,} JPEG images, 320x240 → resize 256, center-crop 224, RGB")
        for workers in (1, None):
            elapsed, n = time_load(root, workers)
            label = "1 thread" if workers == 1 else f"default pool ({min(8, os.cpu_count() or 1)} threads)"
            print(f"  {label:<28} {elapsed:6.2f} s   {n / elapsed:7.0f} images/s")


if __name__ == "__main__":
    main()
