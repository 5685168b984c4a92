"""Your model, your data: a user's own 3-channel classifier, trained here on its own tinted RGB images with its own
normalisation, exported with ``--data`` in each form users keep data in (image folder, ``.npz``, a factory), with
Fashion-MNIST out of reach. Every artifact's claimed accuracy is then reproduced with plain ONNX Runtime and
``torch.jit`` on the images, preprocessed here with torchvision's own transforms; nothing of edge-opt is used for
that check. An unlabelled set and a model that is not a classifier export with fidelity figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import REPO, parse_json_result, run_cli
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN, VAL = 2000, 1000
SIZE = 32
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def _tinted(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST test images as RGB, each tinted with its own random colour (uint8 NHWC, labels)."""
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(data_root), train=False, download=False)
    grey = ds.data[: TRAIN + VAL].numpy().astype(np.float32)
    tint = np.random.default_rng(3).uniform(0.35, 1.0, size=(len(grey), 1, 1, 3)).astype(np.float32)
    rgb = np.clip(grey[..., None] * tint, 0, 255).round().astype(np.uint8)
    return rgb, ds.targets[: TRAIN + VAL].numpy().astype(np.int64)


def _folder_index(labels: np.ndarray) -> np.ndarray:
    """Fashion-MNIST labels as the class indices ImageFolder gives the folders (sorted names): the model's classes."""
    order = sorted(CLASSES)
    return np.asarray([order.index(CLASSES[label]) for label in labels], dtype=np.int64)


def _transform(mean: list[float], std: list[float]):  # the user's own preprocessing, with torchvision
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((SIZE, SIZE)), transforms.ToTensor(), transforms.Normalize(mean, std)])


def _folder_inputs(folder: Path, mean: list[float], std: list[float]) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder), transform=_transform(mean, std))
    x = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
    return x, np.asarray(ds.targets)


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict:
    """The user's data in three forms, and their model trained on it with their own normalisation."""
    root = tmp_path_factory.mktemp("user")
    rgb, labels = _tinted(data_root)
    folder = root / "images"
    for split, rows in (("train", range(TRAIN)), ("val", range(TRAIN, TRAIN + VAL))):
        for i in rows:
            path = folder / split / CLASSES[labels[i]] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb[i]).save(path)
    train_x = rgb[:TRAIN].astype(np.float32) / 255.0
    mean = [round(float(v), 4) for v in train_x.mean(axis=(0, 1, 2))]
    std = [round(float(v), 4) for v in train_x.std(axis=(0, 1, 2))]
    np.savez(root / "train.npz", x=rgb[:TRAIN], y=_folder_index(labels[:TRAIN]))
    np.savez(root / "val.npz", x=rgb[TRAIN:], y=_folder_index(labels[TRAIN:]))
    (root / "stats.json").write_text(json.dumps({"mean": mean, "std": std}))
    # The user's training: their folder, their transforms, their model, their weights file.
    import usernets

    x, y = _folder_inputs(folder / "train", mean, std)
    torch.manual_seed(0)
    model = usernets.build(10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])).backward()
            optimizer.step()
    model.eval()
    torch.save(model.state_dict(), root / "weights.pt")
    return {"root": root, "folder": folder, "mean": mean, "std": std}


@pytest.fixture(scope="module")
def env(user: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No Fashion-MNIST: no EDGE_OPT_DATA_DIR, an empty cache, downloads refused by --no-download."""
    env = {k: v for k, v in os.environ.items() if k != "EDGE_OPT_DATA_DIR"}
    env["EDGE_OPT_CACHE_DIR"] = str(tmp_path_factory.mktemp("empty-cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH", "")]))
    env["USERNETS_DATA"] = str(user["root"])
    return env


def _export(user: dict, env: dict[str, str], out: Path, *data_args: str, extra: tuple[str, ...] = ()) -> dict:
    args = [
        "--model", "usernets:build", "--checkpoint", str(user["root"] / "weights.pt"), *data_args,
        "--precision", "fp32,int8", "--format", "onnx,torchscript", "--target", "host", "--no-download",
        "--out", str(out), "--json", *extra,
    ]  # fmt: skip
    proc = run_cli(args, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return parse_json_result(proc.stdout)["data"]


def _plain_accuracy(artifact: Path, x: np.ndarray, y: np.ndarray) -> float:
    """The artifact's accuracy with its runtime alone: onnxruntime or torch.jit."""
    if (artifact / "model.onnx").is_file():
        session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out = np.concatenate([session.run(None, {name: x[i : i + 100]})[0] for i in range(0, len(x), 100)])
    else:
        module = torch.jit.load(str(artifact / "model.pt"))
        with torch.inference_mode():
            out = torch.cat([module(torch.from_numpy(x[i : i + 100])) for i in range(0, len(x), 100)]).numpy()
    return float((out.argmax(1) == y).mean())


def _check_claims(data: dict, x: np.ndarray, y: np.ndarray) -> None:
    written = [a for a in data["artifacts"] if a["written"]]
    assert {(a["precision"], a["format"]) for a in written} == {
        ("fp32", "onnx"), ("fp32", "torchscript"), ("int8", "onnx"), ("int8", "torchscript"),
    }  # fmt: skip
    assert data["metric"] == "top1" and data["eval_samples"] == len(y)
    fp32 = {a["format"]: a["accuracy"] for a in written if a["precision"] == "fp32"}
    assert min(fp32.values()) > 0.6, fp32  # the user's model on the user's data, not on grey clothing
    for a in written:
        assert _plain_accuracy(Path(a["path"]), x, y) == pytest.approx(a["accuracy"], abs=1.5 / len(y)), a["path"]
        if a["precision"] == "int8":
            assert fp32[a["format"]] - a["accuracy"] <= 0.01, a


def test_image_folder(user: dict, env: dict[str, str], tmp_path: Path) -> None:
    data = _export(
        user, env, tmp_path / "out", "--data", str(user["folder"]), "--input-size", f"{SIZE}x{SIZE}",
        "--mean", ",".join(map(str, user["mean"])), "--std", ",".join(map(str, user["std"])),
    )  # fmt: skip
    x, y = _folder_inputs(user["folder"] / "val", user["mean"], user["std"])
    _check_claims(data, x, y)
    assert data["data"]["class_names"] == sorted(CLASSES)  # sorted folder names, as ImageFolder assigns indices
    manifest = json.loads((Path(data["artifacts"][0]["path"]) / "manifest.json").read_text())
    assert manifest["model"]["class_names"] == sorted(CLASSES)
    assert manifest["preprocessing"]["mean"] == user["mean"] and manifest["preprocessing"]["channels"] == 3
    assert "val" in manifest["host_metrics"]["dataset"]


def test_npz_files(user: dict, env: dict[str, str], tmp_path: Path) -> None:
    root = user["root"]
    data = _export(
        user, env, tmp_path / "out", "--calibration-data", str(root / "train.npz"), "--eval-data", str(root / "val.npz"),
        "--input-size", f"{SIZE}x{SIZE}", "--mean", ",".join(map(str, user["mean"])), "--std", ",".join(map(str, user["std"])),
    )  # fmt: skip
    with np.load(root / "val.npz") as val:
        raw, y = val["x"], val["y"]
    transform = _transform(user["mean"], user["std"])
    x = torch.stack([transform(Image.fromarray(image)) for image in raw]).numpy()
    _check_claims(data, x, y)


def test_factory(user: dict, env: dict[str, str], tmp_path: Path) -> None:
    data = _export(user, env, tmp_path / "out", "--data", "usernets:dataset")
    import usernets

    os.environ["USERNETS_DATA"] = env["USERNETS_DATA"]
    val = usernets.dataset("eval")
    x = torch.stack([val[i][0] for i in range(len(val))]).numpy()
    _check_claims(data, x, np.asarray(val.y))
    assert data["data"]["class_names"] == [f"class{i}" for i in range(10)]


def test_unlabelled_data_and_a_model_that_is_not_a_classifier(user: dict, env: dict[str, str], tmp_path: Path) -> None:
    with np.load(user["root"] / "val.npz") as val:
        np.savez(tmp_path / "unlabelled.npz", x=val["x"][:400])
    args = [
        "--model", "usernets:encoder", "--data", str(tmp_path / "unlabelled.npz"), "--input-size", "32",
        "--precision", "fp32,int8", "--format", "onnx,torchscript", "--target", "host", "--out", str(tmp_path / "out"),
        "--json",
    ]  # fmt: skip
    proc = run_cli(args, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = parse_json_result(proc.stdout)["data"]
    assert data["metric"] == "sqnr_db" and data["fp32_eager_accuracy"] is None
    for a in data["artifacts"]:
        assert a["accuracy"] is None and a["metric"] == "sqnr_db"
        assert {"sqnr_db", "cosine"} <= set(a["metrics"]) and "top1" not in a["metrics"]
        floor = 60 if a["precision"] == "fp32" else 15  # FP32 reproduces the model; INT8 is a close approximation
        assert a["score"] > floor and a["metrics"]["cosine"] > 0.97, a
    manifest = json.loads((Path(data["artifacts"][0]["path"]) / "manifest.json").read_text())
    assert manifest["output"]["shape"] == ["batch", 16, 8, 8] and manifest["host_metrics"]["metric"] == "sqnr_db"
    table = run_cli([a for a in args if a != "--json"] + ["--out", str(tmp_path / "out2")], env)
    assert table.returncode == 0 and "SQNR dB" in table.stdout and "output fidelity to FP32" in table.stdout


def test_sweep_prunes_and_fine_tunes_on_the_users_data(user: dict, env: dict[str, str], tmp_path: Path) -> None:
    args = [
        "--model", "usernets:build", "--checkpoint", str(user["root"] / "weights.pt"), "--data", str(user["folder"]),
        "--input-size", f"{SIZE}x{SIZE}", "--mean", ",".join(map(str, user["mean"])), "--std", ",".join(map(str, user["std"])),
        "--precision", "fp32,int8", "--format", "onnx", "--amounts", "0,0.5", "--target", "host",
        "--out", str(tmp_path / "sweep"), "--json",
    ]  # fmt: skip
    proc = run_cli(args, env, module="edge_opt.cli.sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = parse_json_result(proc.stdout)["data"]["rows"]
    by = {(r["pruning"], r["precision"]): r for r in rows}
    assert set(by) == {(0.0, "fp32"), (0.0, "int8"), (0.5, "fp32"), (0.5, "int8")}
    pruned = by[(0.5, "fp32")]
    # fine-tuned on the user's own training images (Fashion-MNIST is out of reach): it still classifies them
    assert pruned["accuracy"] > 0.6 and pruned["size_bytes"] < 0.6 * by[(0.0, "fp32")]["size_bytes"]
    x, y = _folder_inputs(user["folder"] / "val", user["mean"], user["std"])
    assert _plain_accuracy(Path(pruned["path"]), x, y) == pytest.approx(pruned["accuracy"], abs=1.5 / len(y))


def test_device_evaluates_unlabelled_data_by_fidelity(user: dict, env: dict[str, str], tmp_path: Path) -> None:
    from agent_helpers import TOKEN, AgentProcess

    with np.load(user["root"] / "val.npz") as val:
        np.savez(tmp_path / "unlabelled.npz", x=val["x"][:300])
    (tmp_path / "token").write_text(TOKEN)
    with AgentProcess(tmp_path / "store", tmp_path / "token") as agent:
        args = [
            "--model", "usernets:encoder", "--data", str(tmp_path / "unlabelled.npz"), "--input-size", "32",
            "--precision", "int8", "--format", "onnx", "--out", str(tmp_path / "out"), "--push", f"127.0.0.1:{agent.port}",
            "--token-file", str(tmp_path / "token"), "--bench", "--device-iterations", "10", "--json", "-q",
        ]  # fmt: skip
        proc = run_cli(args, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = parse_json_result(proc.stdout)["data"]["device"]["runs"]
    check = run["device_check"]
    # The device ran the user's 60 held-out items (no labels: no accuracy) and reproduced the host's outputs.
    assert check["samples"] == 60 and "top1_accuracy" not in check and check["host_accuracy"] is None
    assert check["sqnr_db"] > 60 and check["flags"] == [], check


def test_agent_bench_evaluates_a_plain_onnx_file_on_the_users_data(user: dict, env: dict[str, str], tmp_path: Path) -> None:
    # setup: the user's model as a plain torch.onnx.export file (no edge-export), and a real agent
    import usernets
    from agent_helpers import TOKEN, AgentProcess

    model = usernets.build(10)
    model.load_state_dict(torch.load(user["root"] / "weights.pt", weights_only=True))
    model.eval()
    onnx_path = tmp_path / "mine.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 3, SIZE, SIZE),), str(onnx_path), input_names=["images"], output_names=["scores"],
        dynamic_axes={"images": {0: "n"}, "scores": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    x, y = _folder_inputs(user["folder"] / "val", user["mean"], user["std"])
    expected = _plain_accuracy_onnx(onnx_path, x, y)
    (tmp_path / "token").write_text(TOKEN)
    # execute
    with AgentProcess(tmp_path / "store", tmp_path / "token") as agent:
        args = [
            "bench", str(onnx_path), "--device", f"127.0.0.1:{agent.port}", "--token-file", str(tmp_path / "token"),
            "--iterations", "10", "--data", str(user["folder"]), "--mean", ",".join(map(str, user["mean"])),
            "--std", ",".join(map(str, user["std"])), "--json",
        ]  # fmt: skip
        proc = run_cli(args, env, module="edge_agent.cli")
    # assert: benchmarked as it is, and evaluated on the device on the user's 1,000 val images
    assert proc.returncode == 0, proc.stderr[-3000:]
    [entry] = parse_json_result(proc.stdout)["data"]
    evaluation = entry["result"]["evaluation"]
    assert entry["state"] == "RUN_STATE_SUCCEEDED" and evaluation["samples"] == VAL and not evaluation["error"]
    assert evaluation["top1_accuracy"] == pytest.approx(expected, abs=1.5 / VAL) and expected > 0.6
    assert evaluation["agreement_with_host"] == 1.0 and evaluation["sqnr_db"] > 100


def _plain_accuracy_onnx(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = np.concatenate([session.run(None, {"images": x[i : i + 100]})[0] for i in range(0, len(x), 100)])
    return float((out.argmax(1) == y).mean())


def test_pick_without_labels_keeps_a_fidelity_floor(user: dict, env: dict[str, str], tmp_path: Path) -> None:
    from agent_helpers import TOKEN, AgentProcess

    with np.load(user["root"] / "val.npz") as val:
        np.savez(tmp_path / "unlabelled.npz", x=val["x"][:200])
    (tmp_path / "token").write_text(TOKEN)
    with AgentProcess(tmp_path / "store", tmp_path / "token") as agent:
        args = [
            "--model", "usernets:encoder", "--data", str(tmp_path / "unlabelled.npz"), "--input-size", "32",
            "--precision", "fp32,int8", "--format", "onnx", "--out", str(tmp_path / "out"), "--push", f"127.0.0.1:{agent.port}",
            "--token-file", str(tmp_path / "token"), "--pick", "--pick-rounds", "1", "--device-iterations", "10",
            "--min-sqnr", "60", "--json", "-q",
        ]  # fmt: skip
        proc = run_cli(args, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = parse_json_result(proc.stdout)["data"]
    int8 = next(a for a in data["artifacts"] if a["precision"] == "int8")
    assert int8["score"] < 60  # INT8 is a close approximation, not 60 dB close: the floor leaves it out
    pick = data["pick"]
    assert pick["pick"]["winner"].endswith("fp32-onnx"), pick
    [why] = [v for k, v in pick["skipped"].items() if "int8" in k]
    assert "SQNR" in why and "--min-sqnr" in why
