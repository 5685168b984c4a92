"""Training on Fashion-MNIST, cached so that the main job trains once per machine, or never.

The cache key covers everything that changes the weights: the model name and shape, every training setting, the
data (a digest of the labels) and the training code's version. A checkpoint is written atomically, so an
interrupted training never leaves a half-written file that a later run would trust.

The package ships the weights of the built-in default (SmallCNN, Fashion-MNIST, the default training settings),
made by :func:`train_classifier` itself (``python -m edge_opt.model.shipped`` remakes them): a key that matches
them is served from the package instead of training, so a first run does not wait for training.
"""

from __future__ import annotations

import hashlib
import io
import json
from importlib import resources
from pathlib import Path

import torch
from edge_agent.contract.files import write_durably
from torch import nn

from edge_opt import progress
from edge_opt.config import TrainSection
from edge_opt.data import Preprocessing, Split

#: Bump when the training procedure changes, so that old cached checkpoints are not reused.
TRAINING_CODE_VERSION = 1
#: Where the package's trained weights lie (``<model>-<cache key>.pt``).
SHIPPED_WEIGHTS = resources.files("edge_opt.model") / "weights"


def cache_key(model_name: str, settings: TrainSection, train: Split, preprocessing: Preprocessing) -> str:
    if train.labels is None:
        raise ValueError("training needs labelled data")
    labels_digest = hashlib.sha256(train.labels.numpy().tobytes()).hexdigest()[:16]
    payload = {
        "model": model_name,
        "train": settings.model_dump(mode="json"),
        "input": [preprocessing.channels, preprocessing.height, preprocessing.width],
        "data": labels_digest,
        "n": len(train),
        "code": TRAINING_CODE_VERSION,
    }
    if not preprocessing.is_default_normalisation():  # keys of default-normalised models stay as they were
        payload["normalisation"] = [preprocessing.mean, preprocessing.std]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_classifier(module: nn.Module, train: Split, preprocessing: Preprocessing, settings: TrainSection) -> None:
    """Train ``module`` in place with Adam and cross-entropy; deterministic for a given seed."""
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.learning_rate)
    steps_per_epoch = -(-len(train) // settings.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate * 3, total_steps=max(1, settings.epochs * steps_per_epoch)
    )
    loss_fn = nn.CrossEntropyLoss()
    module.train()
    for epoch in range(settings.epochs):
        batches = train.batches(preprocessing, settings.batch_size, shuffle=True, seed=settings.seed + epoch)
        for x, y in progress.track(batches, f"training epoch {epoch + 1}/{settings.epochs}", steps_per_epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
    module.eval()


def trained_checkpoint(
    module: nn.Module,
    model_name: str,
    train: Split,
    preprocessing: Preprocessing,
    settings: TrainSection,
    cache: Path,
) -> tuple[Path, str]:
    """Load cached or shipped weights into ``module``, or train it; either way the weights end in the cache.

    Returns:
        The checkpoint path and where the weights came from: ``cached``, ``shipped`` (the package's) or ``trained``.
    """
    name = f"{model_name}-{cache_key(model_name, settings, train, preprocessing)}.pt"
    path = cache / "checkpoints" / name
    if path.is_file():
        try:
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            module.eval()
            return path, "cached"
        except Exception:  # an unreadable cache entry is retrained, never trusted
            path.unlink(missing_ok=True)
    shipped = SHIPPED_WEIGHTS / name
    if shipped.is_file():
        weights = shipped.read_bytes()
        module.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
        origin = "shipped"
    else:
        train_classifier(module, train, preprocessing, settings)
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        weights, origin = buffer.getvalue(), "trained"
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, weights, mode=0o600)  # as private as the cache always was
    return path, origin
