"""When INT8 loses too much: post-training quantization (PTQ) against quantization-aware training (QAT), and what
QAT costs.

1. Cost: SmallCNN (the main job's trained weights) fine-tuned for ``--epochs`` on the training items, in FP32 and
   with fake quantization (FX QAT, the target's engine; PT2E QAT for ExecuTorch with ``--pt2e``): seconds and the
   ratio QAT / FP32 (the same loop, optimizer and batches).
2. Accuracy: ``edge-sweep``'s own code (``run_sweep`` with ``quantization.qat.mode: always``) on the cases where PTQ
   is known to hurt: SmallCNN pruned by 0.5 (``host`` target), SmallCNN for the per-tensor ``arm64`` profile, and a
   MobileNet-style depthwise network at 28×28 (``qat_nets:mobilenet_tiny``, trained here) for both targets. Each
   INT8 artifact is built by PTQ and by QAT and evaluated on all 10,000 Fashion-MNIST test images; the table prints
   FP32, PTQ and QAT accuracy and which one the export wrote. The written artifacts are then re-evaluated with plain
   ``onnxruntime`` and ``torch.jit`` (nothing of edge-opt), which must reproduce the figure.
3. The plot: ``edge-sweep``'s QAT panel for every case in one figure (``--figure``, e.g. docs/qat.png).

The data goes in as the user's own would (``--calibration-data train.npz --eval-data test.npz``): the first
``--train-items`` Fashion-MNIST training images (QAT's training split; 60,000 = all) and the 10,000 test images.

    EDGE_OPT_DATA_DIR=../shared/datasets python benchmarks/bench_qat.py                     # everything, 60,000 items
    EDGE_OPT_DATA_DIR=../shared/datasets python benchmarks/bench_qat.py --train-items 12000 --figure docs/qat.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # qat_nets, as a user's package

from edge_agent.device.cpu import cpu_model

FM_MEAN, FM_STD = 0.2860, 0.3530


def load_config(**over):
    from edge_opt.config import parse_config

    return parse_config(over)


def fashion(data_root: Path, train_items: int, folder: Path) -> tuple[Path, Path]:
    from torchvision.datasets import FashionMNIST

    train = FashionMNIST(str(data_root), train=True, download=False)
    test = FashionMNIST(str(data_root), train=False, download=False)
    paths = folder / "train.npz", folder / "test.npz"
    np.savez(paths[0], x=train.data[:train_items].numpy(), y=train.targets[:train_items].numpy())
    np.savez(paths[1], x=test.data.numpy(), y=test.targets.numpy())
    return paths


def smallcnn_weights(data_root: Path, folder: Path) -> Path:
    """The main job's trained SmallCNN (the cache, or trained once as edge-export would)."""
    from edge_opt.config import TrainSection, cache_dir
    from edge_opt.data import Preprocessing, load_fashion_mnist
    from edge_opt.model.models import SmallCNN
    from edge_opt.model.train import trained_checkpoint

    model = SmallCNN()
    trained_checkpoint(model, "smallcnn", load_fashion_mnist(data_root, download=False).train, Preprocessing(),
                       TrainSection(), cache_dir())  # fmt: skip
    path = folder / "smallcnn.pt"
    torch.save(model.state_dict(), path)
    return path


def mobilenet_weights(train_npz: Path, epochs: int) -> tuple[Path, float | None]:
    """qat_nets:mobilenet_tiny trained on the training items (FP32, Adam, one-cycle), cached beside SmallCNN's."""
    import qat_nets
    from edge_opt.config import TrainSection, cache_dir
    from edge_opt.data import Preprocessing, Split
    from edge_opt.model.train import train_classifier

    with np.load(train_npz) as data:
        split = Split(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).long())
    path = cache_dir() / "checkpoints" / f"bench-qat-mobilenet_tiny-{len(split)}-{epochs}.pt"
    if path.is_file():
        return path, None
    torch.manual_seed(0)
    model = qat_nets.mobilenet_tiny()
    started = time.perf_counter()
    train_classifier(model, split, Preprocessing(), TrainSection(epochs=epochs, learning_rate=3e-3))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path, time.perf_counter() - started


def cost(weights: Path, train_npz: Path, epochs: int, engine: str, pt2e: bool) -> dict[str, float]:
    """Seconds of an FP32 fine-tune and of QAT, the same loop on the same batches."""
    from edge_opt.config import QatSection
    from edge_opt.data import Preprocessing, Split
    from edge_opt.model.models import SmallCNN
    from edge_opt.quant.qat import fine_tune, fx_qat, pt2e_qat

    with np.load(train_npz) as data:
        split = Split(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).long())
    settings = QatSection(epochs=epochs)
    model = SmallCNN()
    model.load_state_dict(torch.load(weights, weights_only=True))
    example = Preprocessing().apply(split.images[:64])
    float_copy = SmallCNN()
    float_copy.load_state_dict(model.state_dict())
    float_copy.train()
    fp32 = fine_tune(float_copy, split, Preprocessing(), settings, batch_size=128, seed=0, label="FP32").seconds
    _, record = fx_qat(model, split, Preprocessing(), example, engine, settings, batch_size=128, seed=0)
    out = {"fp32_s": fp32, "fx_qat_s": record["train_seconds"], "fx_ratio": record["train_seconds"] / fp32}
    if pt2e:
        _, record = pt2e_qat(model, split, Preprocessing(), example, settings, batch_size=128, seed=0, max_batch=128)
        out.update(pt2e_qat_s=record["train_seconds"], pt2e_ratio=record["train_seconds"] / fp32)
    return out


def sweep_case(name: str, model: str, weights: Path, target: str, amounts: tuple[float, ...], data: tuple[Path, Path],
               epochs: int, out: Path) -> list[dict]:  # fmt: skip
    from edge_opt.sweep.runs import run_sweep

    config = load_config(
        model={"name": model, "checkpoint": str(weights), "input_size": [28, 28], "mean": [FM_MEAN], "std": [FM_STD]},
        data={"calibration": str(data[0]), "eval": str(data[1]), "download": False},
        precisions=["fp32", "int8"],
        formats=["torchscript", "onnx"],
        target=target,
        quantization={"qat": {"mode": "always", "epochs": epochs}},
        benchmark={"iterations": 10, "min_seconds": 0.0, "warmup_runs": 2, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
    )
    rows = run_sweep(config, out / name, amounts)
    for r in rows:
        r["case"] = name
    return rows


def reuse(folder: Path) -> list[dict]:
    """The rows of sweeps an earlier run kept (``--out``): every ``CASE/pN/summary.json`` under ``folder``."""
    from edge_opt.sweep.runs import qat_axis

    rows = []
    for summary in sorted(folder.glob("*/p*/summary.json")):
        data = json.loads(summary.read_text())
        for artifact in data["artifacts"]:
            entry = {**artifact, "pruning": int(summary.parent.name[1:]) / 100, "model": data["model"],
                     "target": data["target"], "case": summary.parent.parent.name}  # fmt: skip
            entry.update(qat_axis(entry))
            rows.append(entry)
    return rows


def plain_accuracy(row: dict, test_npz: Path) -> float:
    """The written artifact's accuracy with its runtime alone (numpy preprocessing from the manifest's numbers)."""
    folder = Path(row["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    with np.load(test_npz) as data:
        x = ((data["x"].astype(np.float32) / 255.0 - FM_MEAN) / FM_STD)[:, None]
        y = data["y"]
    if row["format"] == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if manifest["host_metrics"]["evaluation"].get("mode") == "reference-semantics":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        logits = np.concatenate([session.run(None, {"input": x[i : i + 500]})[0] for i in range(0, len(x), 500)])
    else:
        torch.backends.quantized.engine = manifest["target"]["torch_engine"]
        module = torch.jit.load(str(folder / "model.pt"))
        with torch.no_grad():
            logits = np.concatenate([module(torch.from_numpy(x[i : i + 500])).numpy() for i in range(0, len(x), 500)])
    return float((logits.argmax(1) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-items", type=int, default=60000, help="Fashion-MNIST training images QAT uses")
    parser.add_argument("--epochs", type=int, default=2, help="QAT epochs (and the FP32 fine-tune's)")
    parser.add_argument("--mobilenet-epochs", type=int, default=6, help="FP32 training of mobilenet_tiny")
    parser.add_argument("--pt2e", action="store_true", help="also time PT2E QAT")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--cases", default="pruned,arm64,mobilenet", help="comma list of pruned, arm64, mobilenet")
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps here (default: a temporary folder)")
    parser.add_argument("--figure", type=Path, default=None, help="write the PTQ-vs-QAT figure here")
    parser.add_argument("--reuse", type=Path, action="append", default=[],
                        help="also print (and plot) the sweeps an earlier run kept in this --out folder")  # fmt: skip
    args = parser.parse_args()

    from edge_opt import progress
    from edge_opt.config import resolve_data_root
    from edge_opt.sweep.plots import qat_drops
    from edge_opt.targets import resolve_target

    progress.set_enabled(False)
    data_root = resolve_data_root(load_config())
    host = resolve_target("host")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), host profile {host.name}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average at start {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"data: the first {args.train_items:,} Fashion-MNIST training images (QAT's training split), "
          f"all 10,000 test images (evaluation); QAT {args.epochs} epoch(s)", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-qat-") as tmp:
        folder = Path(tmp)
        out = args.out or folder / "sweeps"
        data = fashion(data_root, args.train_items, folder)
        smallcnn = smallcnn_weights(data_root, folder)
        if not args.skip_cost:
            c = cost(smallcnn, data[0], args.epochs, host.torch_engine, args.pt2e)
            line = (f"\ncost, SmallCNN, {args.epochs} epoch(s) on {args.train_items:,} items: "
                    f"FP32 fine-tune {c['fp32_s']:.1f} s, "
                    f"FX QAT ({host.torch_engine}) {c['fx_qat_s']:.1f} s = {c['fx_ratio']:.2f}× FP32")  # fmt: skip
            if args.pt2e:
                line += f", PT2E QAT {c['pt2e_qat_s']:.1f} s = {c['pt2e_ratio']:.2f}×"
            print(line + f" (load average now {os.getloadavg()[0]:.1f})", flush=True)
        cases = [c for c in args.cases.split(",") if c]
        rows: list[dict] = [row for folder in args.reuse for row in reuse(folder)]
        started = time.perf_counter()
        if "pruned" in cases:
            rows += sweep_case("pruned", "smallcnn", smallcnn, "host", (0.0, 0.5), data, args.epochs, out)
        if "arm64" in cases:
            rows += sweep_case("arm64", "smallcnn", smallcnn, "arm64", (0.0,), data, args.epochs, out)
        if "mobilenet" in cases:
            weights, seconds = mobilenet_weights(data[0], args.mobilenet_epochs)
            how = "cached" if seconds is None else f"in {seconds:.0f} s"
            print(f"mobilenet_tiny trained for {args.mobilenet_epochs} epochs on the training items ({how})", flush=True)
            for target in ("host", "arm64"):
                rows += sweep_case(f"mobilenet-{target}", "qat_nets:mobilenet_tiny", weights, target, (0.0,), data,
                                   args.epochs, out)  # fmt: skip
        print(f"\nPTQ vs QAT ({time.perf_counter() - started:.0f} s for the sweeps; accuracy on 10,000 test images; "
              "Δ against FP32 of the same model, pruning and format)")  # fmt: skip
        header = ("model", "target", "prune", "format", "FP32", "PTQ", "Δ PTQ", "QAT", "Δ QAT", "written", "plain rt",
                  "QAT s")  # fmt: skip
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        fp32 = {(r["case"], r["pruning"], r["format"]): r for r in rows if r["precision"] == "fp32"}
        by_key = {(r["model"], r.get("target"), r["pruning"], r["format"]): r for r in rows if r["precision"] == "int8"}
        for d in qat_drops(rows):
            row = by_key[(d["model"], d["target"], d["pruning"], d["format"])]
            base = fp32[(row["case"], row["pruning"], row["format"])]
            plain = plain_accuracy(row, data[1])
            print(f"| {d['model'].split(':')[-1]} | {d['target']} | {d['pruning']:g} | {d['format']} | "
                  f"{base['accuracy'] * 100:.2f}% | {row['ptq_accuracy'] * 100:.2f}% | {d['ptq']:+.2f} | "
                  f"{row['qat_accuracy'] * 100:.2f}% | {d['qat']:+.2f} | {row['quantized_by'].upper()} | "
                  f"{plain * 100:.2f}% | {row['qat_seconds']:.0f} |", flush=True)  # fmt: skip
        if args.figure:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from edge_opt.sweep.plots import qat_panel

            fig, ax = plt.subplots(figsize=(9, 4.8), constrained_layout=True)
            qat_panel(ax, rows)
            ax.set_title(f"INT8 by PTQ and by QAT against FP32 (Fashion-MNIST test set; {cpu_model()})", fontsize=9)
            fig.savefig(args.figure, dpi=120)
            print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
