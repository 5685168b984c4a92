"""Accuracy where it runs: SmallCNN INT8 built for every target profile, evaluated three (or four) ways.

For each target profile (x86_64, x86_64-avx2, arm64) and format (ONNX, TorchScript), on the same first N test
images (default 1,000):

* **host kernels**: this host's optimised kernels (ONNX Runtime with every graph optimisation; TorchScript on
  the host's own quantized engine, ``x86``);
* **semantics**: the model's own arithmetic (ONNX: ONNX Runtime with graph optimisations disabled, QDQ executed
  as written; TorchScript: the target's quantized engine, qnnpack for arm64);
* **manifest**: what the export recorded (``host_metrics.device_evaluation.host_accuracy``, by its evaluation mode);
* **device**: the emulated Raspberry Pi 4 (``--arm64-python``, from ``scripts/arm64_python.sh``), through the real
  agent: pushed with the evaluation sets, benchmarked, evaluated by the device after timing. TorchScript needs torch
  in the emulated Python (``--arm64-torch-python``), else "-";
* **AVX2-only x86** (``--avx2-emulation``): the ONNX artifact with ONNX Runtime's optimised kernels in this x86
  Python run under ``qemu-x86_64-static -cpu Haswell`` (AVX2, no AVX-512, no VNNI), i.e. what an AVX2-only host's
  kernels compute, and the semantics there.

    python benchmarks/bench_accuracy.py [--samples N] [--arm64-python L] [--arm64-torch-python L] [--avx2-emulation]
                                        [--out DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from edge_agent.device.cpu import cpu_flags, cpu_model
from edge_opt import evalset
from edge_opt.config import parse_config
from edge_opt.export.pipeline import run_export
from edge_opt.formats.evaluation import TorchRunner, evaluation_mode
from edge_opt.formats.onnx import OrtRunner
from edge_opt.formats.torchscript import load_torchscript
from edge_opt.targets import PROFILES, resolve_target
from rich.console import Console
from rich.table import Table

REPO_TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(REPO_TESTS)]
from agent_helpers import AgentProcess  # noqa: E402

TARGETS = ("x86_64", "x86_64-avx2", "arm64")
TINY = {"iterations": 2, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "timeout_seconds": 1800}
TOKEN = "bench-accuracy-token-0123456789"

_AVX2_SCRIPT = """
import json, sys
import numpy as np, onnxruntime as ort
model, data = sys.argv[1], sys.argv[2]
with np.load(data, allow_pickle=False) as d:
    x, y = d["inputs"], d["labels"]
out = {}
levels = ort.GraphOptimizationLevel
for mode, level in (("kernels", levels.ORT_ENABLE_ALL), ("semantics", levels.ORT_DISABLE_ALL)):
    o = ort.SessionOptions(); o.graph_optimization_level = level; o.intra_op_num_threads = 1
    s = ort.InferenceSession(model, sess_options=o, providers=["CPUExecutionProvider"])
    logits = np.concatenate([s.run(None, {"input": x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    np.save(f"{data}.{mode}.npy", logits)
    out[mode] = float((logits.argmax(1) == y).mean())
print(json.dumps(out))
"""


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def _predict(runner: Any, x: np.ndarray) -> np.ndarray:
    return np.concatenate([runner(x[i : i + 100]) for i in range(0, len(x), 100)])


def _avx2(model: Path, inputs: Path, work: Path) -> dict[str, Any]:
    """ONNX Runtime under qemu-x86_64 -cpu Haswell: an AVX2-only x86's kernels, and the semantics there."""
    qemu = shutil.which("qemu-x86_64-static")
    if qemu is None:
        return {}
    data = work / f"avx2-{model.parent.name}.npz"
    shutil.copyfile(inputs, data)
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {"PYTHONPATH": ":".join(site), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [qemu, "-cpu", "Haswell", str(Path(sys.executable).resolve()), "-c", _AVX2_SCRIPT, str(model), str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    kernels, semantics = np.load(f"{data}.kernels.npy"), np.load(f"{data}.semantics.npy")
    out["kernels_vs_semantics_max_diff"] = float(np.abs(kernels - semantics).max())
    out["semantics_logits"] = semantics
    return out


def _device(launcher: str, artifact: Path, work: Path) -> dict[str, Any]:
    from edge_agent.host.client import AgentClient, Credentials

    token = work / "token"
    token.write_text(TOKEN)
    agent = AgentProcess(work / f"store-{Path(launcher).name}", token, python=launcher, env={"PYTHONPATH": ""})
    try:
        port = agent.start(timeout=180)
        with AgentClient(f"127.0.0.1:{port}", Credentials(token=TOKEN), timeout=300) as client:
            sha = client.push(artifact).sha256
            last = list(client.bench(sha, TINY, **evalset.push_eval_sets(client, artifact)))[-1]
    finally:
        agent.close()
    if "result" not in last:
        return {"error": f"{last.get('error', {}).get('code')}: {last.get('error', {}).get('message', '')[:120]}"}
    return last["result"].get("evaluation") or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--arm64-python", help="launcher from scripts/arm64_python.sh (the emulated Pi)")
    parser.add_argument("--arm64-torch-python", help="the same with torch installed (TorchScript on the emulated Pi)")
    parser.add_argument("--avx2-emulation", action="store_true", help="also run ONNX under qemu-x86_64 -cpu Haswell")
    parser.add_argument("--out", type=Path, help="keep the artifacts here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    host = resolve_target("host").name
    console = Console(stderr=args.json)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        root = args.out or Path(tmp)
        for target in TARGETS:
            config = parse_config(
                {
                    "target": target,
                    "precisions": ["int8"],
                    "data": {"eval_samples": args.samples},
                    "export": {"device_eval_samples": args.samples},
                    "benchmark": {**{k: v for k, v in TINY.items() if k != "timeout_seconds"}, "batch_sizes": [1]},
                }
            )
            report = run_export(config, root / target)
            for row in report.rows:
                if row.path is None:
                    continue
                folders = evalset.folders_of(row.path)
                assert folders is not None, "the export wrote no evaluation set"
                with np.load(folders[0] / evalset.FILE_NAME, allow_pickle=False) as data:
                    x, y = data["inputs"], data["labels"]
                model = row.path / ("model.onnx" if row.format.value == "onnx" else "model.pt")
                if row.format.value == "onnx":
                    kernels = _predict(OrtRunner(model), x)
                    semantics = _predict(OrtRunner(model, semantics=True), x)
                else:
                    module = load_torchscript(model)
                    kernels = _predict(TorchRunner(module, engine=resolve_target("host").torch_engine), x)
                    semantics = _predict(TorchRunner(module, engine=PROFILES[target].torch_engine), x)
                manifest = json.loads((row.path / "manifest.json").read_text())
                entry: dict[str, Any] = {
                    "target": target,
                    "format": row.format.value,
                    "host_kernels": _accuracy(kernels, y),
                    "semantics": _accuracy(semantics, y),
                    "kernels_vs_semantics_max_diff": float(np.abs(kernels - semantics).max()),
                    "manifest": manifest["host_metrics"]["device_evaluation"]["host_accuracy"],
                    "manifest_mode": evaluation_mode(target, quantized=True, host_target=host),
                }
                launcher = args.arm64_python if row.format.value == "onnx" else args.arm64_torch_python
                if row.format.value == "torchscript" and PROFILES[target].torch_engine not in ("qnnpack", "onednn"):
                    launcher = None  # an arm64 torch has no x86 engine: the device refuses such an artifact
                if launcher:
                    entry["device"] = _device(launcher, row.path, root / target)
                if args.avx2_emulation and row.format.value == "onnx":
                    avx2 = _avx2(model, folders[0] / evalset.FILE_NAME, root / target)
                    logits = avx2.pop("semantics_logits", None)
                    if logits is not None:  # the semantics are the same on an AVX2-only CPU as here
                        avx2["semantics_vs_here_max_diff"] = float(np.abs(logits - semantics).max())
                    entry["avx2_only_x86"] = avx2
                rows.append(entry)
                console.print(f"[dim]{json.dumps(entry)}[/dim]")
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx_vnni"})
    title = (
        f"SmallCNN INT8, accuracy on the first {args.samples:,} Fashion-MNIST test images; "
        f"host {platform.machine()} {cpu_model()} ({', '.join(flags)}; profile {host})"
    )
    table = Table(title=title, title_justify="left")
    columns = ("target", "format", "host kernels", "semantics", "manifest (mode)", "emulated Pi", "Pi agrees")
    columns += ("AVX2-only x86 kernels",)
    for col in columns:
        table.add_column(col, justify="left" if col in ("target", "format") else "right")
    for r in rows:
        device = r.get("device") or {}
        avx2 = r.get("avx2_only_x86") or {}
        table.add_row(
            r["target"],
            r["format"],
            f"{r['host_kernels'] * 100:.2f}%",
            f"{r['semantics'] * 100:.2f}%",
            f"{r['manifest'] * 100:.2f}% ({r['manifest_mode']})",
            f"{device['top1_accuracy'] * 100:.2f}%" if "top1_accuracy" in device else (device.get("error") or "-")[:40],
            f"{device['agreement_with_host'] * 100:.1f}%, Δ {device['max_abs_diff']:.1g}" if "max_abs_diff" in device else "-",
            f"{avx2['kernels'] * 100:.2f}% (Δ {avx2['kernels_vs_semantics_max_diff']:.2g})" if "kernels" in avx2 else "-",
        )
    if args.json:
        print(json.dumps({"host": {"cpu": cpu_model(), "flags": flags, "profile": host}, "rows": rows}, indent=2))
    else:
        console.print(table)


if __name__ == "__main__":
    main()
