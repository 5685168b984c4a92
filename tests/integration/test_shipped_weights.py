"""The weights shipped with the package are what the project's own training code makes, and the main job uses them.

The key check fails as soon as the training code, its settings or the data change without the weights being
remade (``python -m edge_opt.model.shipped``); the retraining check remakes them and compares accuracies (CPU
kernels differ between machines, so the comparison is of accuracy, not bytes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from edge_opt.data import load_fashion_mnist
from edge_opt.model.models import SmallCNN
from edge_opt.model.shipped import fp32_test_accuracy, shipped_name
from edge_opt.model.train import SHIPPED_WEIGHTS

pytestmark = [pytest.mark.integration]

#: The reference guide's FP32 baseline for its SmallCNN: the shipped weights must beat it.
GUIDE_BASELINE = 0.890
#: How far a retraining on another CPU may land from the shipped weights' accuracy.
RETRAIN_TOLERANCE = 0.005


def _shipped_accuracy(data_dir: Path) -> tuple[Path, float]:
    data = load_fashion_mnist(data_dir, download=False)
    path = Path(str(SHIPPED_WEIGHTS / shipped_name(data)))
    assert path.is_file(), f"no shipped weights for today's training key ({path.name}): run python -m edge_opt.model.shipped"
    module = SmallCNN()
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return path, fp32_test_accuracy(module.eval(), data)


def test_the_shipped_weights_match_todays_training_key_and_beat_the_guide(cli_env: dict[str, str]) -> None:
    _, accuracy = _shipped_accuracy(Path(cli_env["EDGE_OPT_DATA_DIR"]))
    assert accuracy > GUIDE_BASELINE


@pytest.mark.slow
def test_the_training_code_remakes_the_shipped_weights(cli_env: dict[str, str], tmp_path: Path) -> None:
    # setup: the shipped weights' accuracy
    _, shipped = _shipped_accuracy(Path(cli_env["EDGE_OPT_DATA_DIR"]))
    # execute: the documented command, into a scratch folder
    proc = subprocess.run(
        [sys.executable, "-m", "edge_opt.model.shipped", "--out", str(tmp_path)],
        capture_output=True, text=True, env=cli_env, timeout=3600, check=False,
    )  # fmt: skip
    # assert: the same file name (key) and the same accuracy within the tolerance
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["weights"]).name == shipped_name(load_fashion_mnist(Path(cli_env["EDGE_OPT_DATA_DIR"]), download=False))
    assert abs(result["test_accuracy"] - shipped) <= RETRAIN_TOLERANCE, (result, shipped)
