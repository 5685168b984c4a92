"""A model of the user's own, trained with its own normalisation, exported with that normalisation.

The model is SmallCNN's trained weights with the first convolution rescaled so that the network expects inputs
normalised with std 0.1 instead of Fashion-MNIST's 0.353 (mean unchanged: with zero padding the rescaling is then
exact). It is the same classifier, so exported with ``--std 0.1`` it must score what SmallCNN scores; exported with
the default statistics it gets inputs 3.5 times too small and loses accuracy, and the export warns about it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import parse_json_result, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER_STD = 0.1
COMMON = ["--precision", "fp32", "--format", "onnx", "--target", "host", "--eval-samples", "1000", "--json"]


def _accuracy(result: dict) -> float:
    [artifact] = [a for a in result["data"]["artifacts"] if a["path"]]
    return artifact["accuracy"]


def test_a_user_model_is_evaluated_with_its_own_normalisation(tmp_path: Path, cli_env: dict[str, str]) -> None:
    reference = run_cli([*COMMON, "--out", str(tmp_path / "smallcnn")], cli_env)
    assert reference.returncode == 0, reference.stderr
    smallcnn_accuracy = _accuracy(parse_json_result(reference.stdout))
    manifest = json.loads((tmp_path / "smallcnn" / "smallcnn-fp32-onnx" / "manifest.json").read_text())
    # The export names the trained SmallCNN weights it used ("using cached weights PATH" or "cached weights PATH").
    [checkpoint] = {Path(m) for m in re.findall(r"cached weights (\S+\.pt)", reference.stderr)}

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state["features.0.weight"] = state["features.0.weight"] * (USER_STD / manifest["preprocessing"]["std"])
    user_weights = tmp_path / "user.pt"
    torch.save(state, user_weights)
    user = ["--model", "edge_opt.models:SmallCNN", "--checkpoint", str(user_weights)]

    with_own = run_cli([*COMMON, *user, "--std", str(USER_STD), "--out", str(tmp_path / "own")], cli_env)
    assert with_own.returncode == 0, with_own.stderr
    own = parse_json_result(with_own.stdout)
    assert _accuracy(own) == pytest.approx(smallcnn_accuracy, abs=0.002)
    [folder] = (tmp_path / "own").glob("*-fp32-onnx")
    recorded = json.loads((folder / "manifest.json").read_text())["preprocessing"]
    assert recorded["std"] == USER_STD and recorded["mean"] == pytest.approx(0.2860)
    assert "normalised with Fashion-MNIST" not in with_own.stderr

    with_default = run_cli([*COMMON, *user, "--out", str(tmp_path / "default")], cli_env)
    assert with_default.returncode == 0, with_default.stderr
    assert _accuracy(parse_json_result(with_default.stdout)) < smallcnn_accuracy - 0.05
    assert "normalised with Fashion-MNIST's mean and std" in with_default.stderr and "--mean/--std" in with_default.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--std", "0"], "std [0.0]: values must be finite and > 0"),
        (["--mean", "0.1,0.2"], "mean needs 1 value or 1 per channel (3), got 2"),
        (["--mean", "a"], "invalid 'a'; use one number or one per channel"),
        (["--channels", "3"], "smallcnn takes 1-channel (grey) inputs"),
        (["--model", "edge_test_models:tiny", "--mean", "0.1,0.2,0.3"], "mean has 3 values for a 1-channel input"),
    ],
)
def test_bad_normalisation_is_refused_before_any_work(
    tmp_path: Path, cli_env: dict[str, str], args: list[str], message: str
) -> None:
    proc = run_cli([*args, "--precision", "fp32", "--format", "onnx", "--out", str(tmp_path / "o")], cli_env)
    assert proc.returncode in (2, 4), proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "o").exists()
