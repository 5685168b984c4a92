"""Every candidate path for MobileNetV2 224, batch 1, one thread, on this machine, and the one the pick chooses.

Builds the candidates through the real pipeline (FP32, FP16, INT8 × TorchScript and ONNX, FP32 and INT8 ExecuTorch:
each validated, as ``edge-export`` writes them; a build the gates refuse is reported and skipped), then times each
with its own runtime and torch eager FP32 in one process, in interleaved rounds (every round runs every candidate,
in a rotated order), and hands each candidate's round medians to :func:`edge_opt.device.pick.pick`. Prints the CPU and
its flags, the table with the winner marked, the ratios to torch eager FP32 and to ONNX Runtime FP32, and the
physical limit: the model's multiply-adds ÷ what one core retires per second for the instruction set.

The rounds here share one process, so their spread leaves out what varies between worker processes (memory
placement, core, frequency): the intervals are narrower than a device pick's. ``edge-export --pick`` runs each
round in a fresh worker; ``benchmarks/bench_pick_validate.py`` checks that pick against fresh-process timings.

    python benchmarks/bench_pick.py [--rounds 7] [--iterations 30] [--out DIR] [--json FILE]

MobileNetV2 has random weights here (torchvision weights cannot be downloaded; BatchNorm re-estimated), so the
accuracy budget is off unless ``--budget`` is given: accuracy figures are those of random weights.
Noise: on a shared machine compare ratios within a run; the interleaving spreads disturbances over all candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from edge_agent.contract.formats import MODEL_FORMATS
from edge_agent.device.info import cpu_model
from edge_opt.config import parse_config
from edge_opt.device.pick import Candidate, pick
from edge_opt.device.round_stats import estimate
from edge_opt.errors import ToolchainError
from edge_opt.export.pipeline import run_export
from edge_opt.formats.evaluation import TorchRunner
from edge_opt.formats.executorch import PteRunner
from edge_opt.formats.litert import LiteRTRunner
from edge_opt.formats.onnx import OrtRunner
from edge_opt.formats.torchscript import load_torchscript
from edge_opt.targets import cpu_flags, resolve_target
from rich.console import Console
from rich.table import Table

SIZE = 224
COMMON = {
    "model": {"name": "mobilenet_v2", "input_size": [SIZE, SIZE]},
    "data": {"eval_samples": 100, "batch_size": 16},
    "export": {"parity_samples": 64},
    "calibration_batches": 4,
    "benchmark": {"iterations": 3, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
}
# FP16 ExecuTorch is left out: on this CPU (AVX512-FP16) XNNPACK computes in FP16 and the FP16 gate refuses the
# random-init MobileNetV2 (max error 14% of the largest logit against the 10% bound), which would stop the build.
# Each ExecuTorch precision is its own build, so that a refusal of one leaves the other a candidate.
BUILDS = (
    {"precisions": ["fp32", "fp16", "int8"], "formats": ["torchscript", "onnx"]},
    {"precisions": ["fp32"], "formats": ["executorch"]},
    {"precisions": ["int8"], "formats": ["executorch"]},
    {"precisions": ["fp32", "fp16", "int8"], "formats": ["litert"]},
)
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16",
                     "asimd", "asimddp", "i8mm")


def build(out: Path) -> tuple[dict[str, tuple[object, dict]], float]:
    """Export every candidate; returns name → (runner, row) and the FP32 eager accuracy."""
    candidates: dict[str, tuple[object, dict]] = {}
    reference = float("nan")
    for i, extra in enumerate(BUILDS):
        started = time.perf_counter()
        try:
            report = run_export(parse_config({**COMMON, **extra}), out / f"build{i}")
        except ToolchainError as exc:
            print(f"refused {extra['precisions']} × {extra['formats']}: {exc}", flush=True)
            continue
        print(f"built {extra['precisions']} × {extra['formats']} in {time.perf_counter() - started:.0f} s", flush=True)
        reference = report.reference_accuracy
        for row in report.rows:
            if not row.written:
                continue
            name = f"{row.precision.value}-{row.format.value}"
            model = row.path / MODEL_FORMATS[row.format.value].file_name
            if row.format.value == "onnx":
                runner: object = OrtRunner(model, threads=1)
            elif row.format.value == "executorch":
                runner = PteRunner(model)
            elif row.format.value == "litert":
                runner = LiteRTRunner(model, threads=1)
            else:
                engine = report.target.torch_engine if row.precision.value == "int8" else None
                dtype = torch.float16 if row.precision.value == "fp16" else torch.float32
                runner = TorchRunner(load_torchscript(model), dtype=dtype, engine=engine)
            candidates[name] = (runner, {"accuracy": row.accuracy, "size_bytes": row.size_bytes, "path": str(row.path)})
    return candidates, reference


def time_interleaved(runners: dict[str, object], rounds: int, iterations: int) -> dict[str, list[list[float]]]:
    """Per runner, per round, ``iterations`` call latencies (ms) at batch 1 on one thread."""
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE), dtype=np.float32)
    names = list(runners)
    samples: dict[str, list[list[float]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            runner = runners[name]
            with runner.threads(1):
                for _ in range(3):
                    runner(x)
                got = []
                for _ in range(iterations):
                    t0 = time.perf_counter()
                    runner(x)
                    got.append((time.perf_counter() - t0) * 1000)
            samples[name].append(got)
        print(f"round {r + 1}/{rounds} done", flush=True)
    return samples


def multiply_adds(size: int = SIZE) -> int:
    """Multiply-adds of MobileNetV2 (10 classes) at ``size``: every convolution and linear layer, counted by hooks."""
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    total = [0]

    def conv(m: torch.nn.Conv2d, _: object, out: torch.Tensor) -> None:
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: torch.nn.Linear, _: object, out: torch.Tensor) -> None:
        total[0] += out.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return total[0]


def cpu_ghz() -> float:
    """The nominal clock: cpuinfo's MHz (a KVM guest reports the host's base clock)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1]) / 1000
    return float("nan")


def limits(flags: set[str]) -> dict[str, float]:
    """Multiply-adds one core retires per cycle, by instruction set (two FMA ports on x86; one NEON pipe pair on arm)."""
    per_cycle = {}
    if "avx512f" in flags:
        per_cycle["fp32 AVX-512 FMA (2 × 16 lanes)"] = 32
    elif "avx2" in flags and "fma" in flags:
        per_cycle["fp32 AVX2 FMA (2 × 8 lanes)"] = 16
    if "avx512_vnni" in flags:
        per_cycle["int8 AVX-512 VNNI (2 × 64 u8·s8)"] = 128
    elif "avx_vnni" in flags or "avx2" in flags:
        per_cycle["int8 AVX2 (2 × 32 u8·s8)"] = 64
    if "amx_int8" in flags:
        per_cycle["int8 AMX (1024 per cycle)"] = 1024
    return per_cycle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=30, help="calls per candidate per round")
    parser.add_argument("--budget", type=float, help="accuracy budget in points (default off: random weights)")
    parser.add_argument("--out", type=Path, help="keep the artifacts here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write every sample and the pick here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # One thread for ExecuTorch too: its XNNPACK pool can be sized only before the first program loads.
    from edge_agent.runtimes.executorch_program import set_threads

    set_threads(1)
    flags = cpu_flags()
    console = Console(width=130)
    console.print(f"CPU: {cpu_model()} ({platform.machine()}, {os.cpu_count()} logical CPUs, {cpu_ghz():.2f} GHz nominal)")
    console.print(f"flags: {' '.join(f for f in INTERESTING_FLAGS if f in flags) or '-'}; target {resolve_target('host').name}")
    with tempfile.TemporaryDirectory() as tmp:
        built, reference = build(args.out or Path(tmp))
        runners = {name: runner for name, (runner, _) in built.items()}
        eager = torchvision.models.mobilenet_v2(num_classes=10).eval()
        runners["torch eager fp32 (reference)"] = TorchRunner(eager)
        load = os.getloadavg()[0]
        samples = time_interleaved(runners, args.rounds, args.iterations)
        load = max(load, os.getloadavg()[0])
    medians = {n: [statistics.median(r) for r in rounds] for n, rounds in samples.items()}
    candidates = [
        Candidate(n, medians[n], info["accuracy"], info["size_bytes"], calls=sum(map(len, samples[n])))
        for n, (_, info) in built.items()
    ]
    budget = None if args.budget is None else args.budget / 100
    result = pick(candidates, reference_accuracy=reference, max_accuracy_drop=budget)
    figures = {n: estimate(m, result.spread) for n, m in medians.items()}
    eager_p50 = figures["torch eager fp32 (reference)"].median
    ort_p50 = figures["fp32-onnx"].median if "fp32-onnx" in figures else float("nan")

    table = Table(title=f"MobileNetV2 {SIZE}×{SIZE}, batch 1, 1 thread, {args.rounds} interleaved rounds × {args.iterations}")
    for col in ("candidate", "median of round medians, ms", "95% interval (rounds)", "width", "× eager FP32", "× ORT FP32",
                "size MB", "pick"):
        table.add_column(col, justify="left" if col in ("candidate", "pick") else "right")
    verdict = {v.candidate.name: v for v in result.verdicts}
    for name in sorted(figures, key=lambda n: figures[n].median):
        e = figures[name]
        v = verdict.get(name)
        mark = "★ " + v.status if v and v.status == "winner" else (v.status if v else "")
        size = f"{built[name][1]['size_bytes'] / 1e6:.2f}" if name in built else "-"
        table.add_row(name, f"{e.median:.2f}", f"{e.low:.2f}–{e.high:.2f}", f"{e.width * 100:.0f}%",
                      f"{eager_p50 / e.median:.2f}×", f"{ort_p50 / e.median:.2f}×", size, mark)
    console.print(table)
    winner = result.winner
    fastest = result.fastest
    if winner and fastest:
        w, f = figures[winner.name].median, figures[fastest.name].median
        console.print(f"pick: {winner.name} ({verdict[winner.name].reason}; {result.summary()}); fastest measured: "
                      f"{fastest.name}; the pick is {(w / f - 1) * 100:.1f}% from the fastest; {eager_p50 / w:.2f}× torch "
                      "eager FP32")
    macs = multiply_adds()
    ghz = cpu_ghz()
    console.print(f"physical limit: {macs / 1e6:.0f} M multiply-adds per image at {ghz:.2f} GHz, one core:")
    for isa, per_cycle in limits(flags).items():
        floor_ms = macs / (per_cycle * ghz * 1e9) * 1000
        line = f"  {isa}: {floor_ms:.3f} ms"
        if winner:
            w = figures[winner.name].median
            line += f" → the pick runs at {floor_ms / w * 100:.0f}% of it ({w / floor_ms:.0f}× the floor)"
        console.print(line)
    console.print(f"load average during the run: up to {load:.1f} on {os.cpu_count()} CPUs (shared machine: ratios, not ms)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "flags": sorted(flags), "samples_ms": samples,
                                         "pick": result.to_dict(), "multiply_adds": macs}, indent=1))


if __name__ == "__main__":
    main()
