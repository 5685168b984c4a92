"""Check an exported ONNX artifact with nothing but numpy and onnxruntime (no edge-opt, no torch).

Reads the raw Fashion-MNIST test split (IDX files, as torchvision lays them out), preprocesses the uint8 images
exactly as the artifact's manifest.json says, runs the model and prints the accuracy next to the manifest's claim.

    python examples/onnx_accuracy_plain.py ARTIFACT_DIR DATA_ROOT

DATA_ROOT is the folder holding FashionMNIST/raw. Prints one JSON line: {"accuracy": ..., "claimed": ..., ...}.
The session is made as the manifest's ``host_metrics.evaluation.mode`` says: ``reference-semantics`` (an INT8
artifact built for another CPU than the exporting host's) disables graph optimisations, so quantize / dequantize
run as written; ``host-kernels`` uses onnxruntime's defaults.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(raw: Path, stem: str) -> Path:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise SystemExit(f"{stem} not found in {raw}")


def preprocess(images: np.ndarray, spec: dict) -> np.ndarray:
    x = images.astype(np.float32)[:, None, :, :] * np.float32(spec["scale"])
    if (spec["height"], spec["width"]) != x.shape[-2:]:
        raise SystemExit("this example handles 28x28 models only (no resize)")
    if spec["channels"] != 1:
        x = np.repeat(x, spec["channels"], axis=1)
    # mean and std: one number for every channel, or a list with one per channel.
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return (x - mean) / std


def main(artifact: Path, data_root: Path) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    model_path = artifact / manifest["file"]["name"]
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    if sha != manifest["file"]["sha256"]:
        raise SystemExit(f"sha256 mismatch: {sha} != {manifest['file']['sha256']}")
    raw = data_root / "FashionMNIST" / "raw"
    images = read_idx(find(raw, "t10k-images-idx3-ubyte"))
    labels = read_idx(find(raw, "t10k-labels-idx1-ubyte")).astype(np.int64)
    n = manifest["host_metrics"]["accuracy_samples"]
    images, labels = images[:n], labels[:n]
    x = preprocess(images, manifest["preprocessing"]).astype(manifest["input"]["dtype"])
    options = ort.SessionOptions()
    mode = (manifest["host_metrics"].get("evaluation") or {}).get("mode", "host-kernels")
    if mode == "reference-semantics":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    name = manifest["input"]["name"]
    logits = np.concatenate([session.run(None, {name: x[i : i + 256]})[0] for i in range(0, len(x), 256)])
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    print(
        json.dumps(
            {
                "accuracy": accuracy,
                "claimed": manifest["host_metrics"]["accuracy"],
                "samples": int(n),
                "mode": mode,
                "sha256_ok": True,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
