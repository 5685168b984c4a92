"""A model of the user's own, trained with its own normalisation, exported with that normalisation.

The models are SmallCNN's trained weights with the first convolution rescaled so that the network expects inputs
normalised with other statistics (mean unchanged, so that with zero padding the rescaling is exact): std 0.1 on
one channel, and per-channel std on three channels (the grey image repeated, ``edge_test_models:smallcnn_rgb``).
Each is the same classifier as SmallCNN, so exported with its own statistics it must score what SmallCNN scores;
exported with the default statistics it gets inputs 3.5 times too small and loses accuracy, and the export warns.
A plain numpy + onnxruntime consumer (``examples/onnx_accuracy_plain.py``) reproduces the accuracy from the
manifest alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import parse_json_result, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
USER_STD = 0.1
RGB_STD = (0.2, 0.3, 0.4)
COMMON = ["--precision", "fp32", "--format", "onnx", "--target", "host", "--eval-samples", "1000", "--json"]


def _accuracy(result: dict) -> float:
    [artifact] = [a for a in result["data"]["artifacts"] if a["path"]]
    return artifact["accuracy"]


def _smallcnn_reference(tmp_path: Path, cli_env: dict[str, str]) -> tuple[float, dict, dict]:
    """SmallCNN's FP32 ONNX accuracy, its manifest, and its trained weights."""
    reference = run_cli([*COMMON, "--out", str(tmp_path / "smallcnn")], cli_env)
    assert reference.returncode == 0, reference.stderr
    manifest = json.loads((tmp_path / "smallcnn" / "smallcnn-fp32-onnx" / "manifest.json").read_text())
    # The trained SmallCNN weights that export used: the cache's file for the default training settings.
    from edge_opt.config import TrainSection
    from edge_opt.data import Preprocessing, load_fashion_mnist
    from edge_opt.model.train import cache_key

    train = load_fashion_mnist(Path(cli_env["EDGE_OPT_DATA_DIR"]), download=False).train
    key = cache_key("smallcnn", TrainSection(), train, Preprocessing())
    checkpoint = Path(cli_env["EDGE_OPT_CACHE_DIR"]) / "checkpoints" / f"smallcnn-{key}.pt"
    assert checkpoint.is_file(), f"{checkpoint} missing; the export said: {reference.stderr[-500:]}"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return _accuracy(parse_json_result(reference.stdout)), manifest, state.get("state_dict", state)


def _plain_check(artifact: Path, cli_env: dict[str, str]) -> dict:
    """examples/onnx_accuracy_plain.py: numpy + onnxruntime and the manifest, nothing of edge-opt."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "onnx_accuracy_plain.py"), str(artifact), cli_env["EDGE_OPT_DATA_DIR"]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_user_model_is_evaluated_with_its_own_normalisation(tmp_path: Path, cli_env: dict[str, str]) -> None:
    smallcnn_accuracy, manifest, state = _smallcnn_reference(tmp_path, cli_env)
    fmnist = manifest["preprocessing"]
    state["features.0.weight"] = state["features.0.weight"] * (USER_STD / fmnist["std"])
    user_weights = tmp_path / "user.pt"
    torch.save(state, user_weights)
    user = ["--model", "edge_opt.model.models:SmallCNN", "--checkpoint", str(user_weights)]

    own_statistics = ["--mean", str(fmnist["mean"]), "--std", str(USER_STD)]
    with_own = run_cli([*COMMON, *user, *own_statistics, "--out", str(tmp_path / "own")], cli_env)
    assert with_own.returncode == 0, with_own.stderr
    own = parse_json_result(with_own.stdout)
    assert _accuracy(own) == pytest.approx(smallcnn_accuracy, abs=0.002)
    [folder] = (tmp_path / "own").glob("*-fp32-onnx")
    recorded = json.loads((folder / "manifest.json").read_text())["preprocessing"]
    assert recorded["std"] == USER_STD and recorded["mean"] == pytest.approx(0.2860)
    assert "normalised with Fashion-MNIST" not in with_own.stderr and own["data"]["notes"] == []

    # Only the std given: the mean is still Fashion-MNIST's, and the export says so.
    std_only = run_cli([*COMMON, *user, "--std", str(USER_STD), "--out", str(tmp_path / "std-only")], cli_env)
    assert std_only.returncode == 0, std_only.stderr
    assert any("normalised with Fashion-MNIST's mean (" in n for n in parse_json_result(std_only.stdout)["data"]["notes"])

    with_default = run_cli([*COMMON, *user, "-q", "--out", str(tmp_path / "default")], cli_env)
    assert with_default.returncode == 0, with_default.stderr
    default = parse_json_result(with_default.stdout)
    assert _accuracy(default) < smallcnn_accuracy - 0.05
    # Even with -q (no progress on stderr) the warning reaches the JSON result and the table's notes.
    [warning] = [n for n in default["data"]["notes"] if "normalised with Fashion-MNIST's mean and std" in n]
    assert "--mean/--std" in warning


def test_a_three_channel_model_with_per_channel_statistics(tmp_path: Path, cli_env: dict[str, str]) -> None:
    smallcnn_accuracy, manifest, state = _smallcnn_reference(tmp_path, cli_env)
    fmnist = manifest["preprocessing"]
    # sum over c of w * std_c / (3 std) applied to (u - mean) / std_c is w (u - mean) / std: SmallCNN's first layer.
    weight = state["features.0.weight"]
    scale = torch.tensor(RGB_STD).view(1, 3, 1, 1) / (3 * fmnist["std"])
    state["features.0.weight"] = weight.repeat(1, 3, 1, 1) * scale
    user_weights = tmp_path / "rgb.pt"
    torch.save(state, user_weights)
    args = ["--model", "edge_test_models:smallcnn_rgb", "--checkpoint", str(user_weights), "--channels", "3"]
    args += ["--mean", ",".join([str(fmnist["mean"])] * 3), "--std", ",".join(map(str, RGB_STD))]
    proc = run_cli([*COMMON, *args, "--out", str(tmp_path / "rgb")], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert _accuracy(parse_json_result(proc.stdout)) == pytest.approx(smallcnn_accuracy, abs=0.002)
    [folder] = (tmp_path / "rgb").glob("*-fp32-onnx")
    recorded = json.loads((folder / "manifest.json").read_text())
    assert recorded["preprocessing"]["std"] == list(RGB_STD) and recorded["input"]["shape"][1] == 3
    plain = _plain_check(folder, cli_env)
    assert plain["accuracy"] == pytest.approx(plain["claimed"], abs=1e-9)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--std", "0"], 2, "std [0.0]: values must be finite and > 0"),
        (["--mean", "0.1,0.2"], 2, "mean needs 1 value or 1 per channel (3), got 2"),
        (["--mean", "a"], 2, "invalid 'a'; use one number or one per channel"),
        (["--channels", "3"], 4, "smallcnn takes 1-channel (grey) inputs"),
        (["--model", "resnet18", "--channels", "1"], 4, "resnet18 takes 3-channel inputs"),
        (
            ["--model", "edge_test_models:tiny", "--mean", "0.1,0.2,0.3"],
            4,
            "mean has 3 values but the model takes 1 channel(s): give one value, or --channels 3 if the model takes RGB",
        ),
    ],
)
def test_bad_normalisation_is_refused_before_anything_is_written(
    tmp_path: Path, cli_env: dict[str, str], args: list[str], code: int, message: str
) -> None:
    proc = run_cli([*args, "--precision", "fp32", "--format", "onnx", "--out", str(tmp_path / "o"), "--json"], cli_env)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    if code != 2:  # argparse's own usage errors print no JSON; the toolchain's errors do
        assert message in parse_json_result(proc.stdout)["errors"][0]["message"]
    assert not (tmp_path / "o").exists()
