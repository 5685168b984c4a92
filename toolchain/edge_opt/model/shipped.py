"""The weights shipped with the package: SmallCNN trained on Fashion-MNIST by the project's own training code.

``python -m edge_opt.model.shipped`` trains SmallCNN exactly as the main job would without them (the default
training settings, :func:`edge_opt.model.train.train_classifier`), writes ``smallcnn-<cache key>.pt`` into the
package's ``weights`` folder (or ``--out DIR``) and prints the FP32 top-1 accuracy on the 10,000 test images.
The main job serves those weights when its cache key is theirs (:func:`edge_opt.model.train.trained_checkpoint`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from edge_agent.contract.files import write_durably

from edge_opt.config import TrainSection
from edge_opt.data import FashionMNIST, Preprocessing, load_fashion_mnist
from edge_opt.formats.evaluation import TorchRunner, accuracy_of, predict
from edge_opt.model.models import SmallCNN
from edge_opt.model.train import SHIPPED_WEIGHTS, cache_key, train_classifier

MODEL = "smallcnn"


def shipped_name(data: FashionMNIST) -> str:
    """The file name the default SmallCNN's weights have for ``data`` (the main job's cache key)."""
    return f"{MODEL}-{cache_key(MODEL, TrainSection(), data.train, Preprocessing())}.pt"


def fp32_test_accuracy(module: torch.nn.Module, data: FashionMNIST) -> float:
    """FP32 top-1 accuracy on the test split."""
    logits = predict(TorchRunner(module), data.test, Preprocessing(), 256)
    return accuracy_of(logits, data.test.labels)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_opt.model.shipped", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("EDGE_OPT_DATA_DIR", ".")),
                        help="folder holding FashionMNIST/raw (default: $EDGE_OPT_DATA_DIR)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the weights (default: the package's)")
    args = parser.parse_args(argv)
    data = load_fashion_mnist(args.data_dir, download=False)
    module = SmallCNN()
    train_classifier(module, data.train, Preprocessing(), TrainSection())
    out = args.out or Path(str(SHIPPED_WEIGHTS))
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    path = out / shipped_name(data)
    write_durably(path, buffer.getvalue())
    print(json.dumps({"weights": str(path), "test_accuracy": fp32_test_accuracy(module, data)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
