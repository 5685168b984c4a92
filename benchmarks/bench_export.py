"""Host latency of every precision × format, from one run on one machine.

SmallCNN (trained on Fashion-MNIST) at batch 1 and 32, and MobileNetV2 (224×224, random weights with BatchNorm
re-estimated) at batch 1. Each artifact is built and validated by the real pipeline, then timed with its own
runtime on one thread; ratios are to the FP32 artifact of the same format, measured in the same run.

    python benchmarks/bench_export.py [--out DIR] [--json]

Noise: these figures come from a shared machine; compare ratios within a run, never absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from edge_opt.config import parse_config
from edge_opt.export.pipeline import run_export
from edge_opt.targets import resolve_target
from rich.console import Console
from rich.table import Table

BENCH = {"threads": 1, "warmup_runs": 20, "warmup_min_seconds": 0.5, "iterations": 200, "min_seconds": 2.0}
CASES = {
    "smallcnn": {"model": {"name": "smallcnn"}, "benchmark": {**BENCH, "batch_sizes": [1, 32]}},
    "mobilenet_v2": {
        "model": {"name": "mobilenet_v2", "input_size": [224, 224]},
        "data": {"eval_samples": 100, "batch_size": 16},
        "export": {"parity_samples": 64},
        "benchmark": {**BENCH, "iterations": 50, "batch_sizes": [1]},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="keep the artifacts here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            report = run_export(parse_config(case), (args.out or Path(tmp)) / name)
            for row in report.rows:
                for batch, ms in row.latency_ms.items():
                    results.append(
                        {
                            "model": name,
                            "precision": row.precision.value,
                            "format": row.format.value,
                            "batch": batch,
                            "p50_ms": ms,
                            "ratio_vs_fp32": row.speedup.get(batch, 1.0),
                            "size_mb": row.size_bytes / 1e6,
                            "accuracy": row.accuracy,
                        }
                    )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    table = Table(title=f"host latency, 1 thread — {cpu}, target {resolve_target('host').name}")
    for col in ("model", "batch", "precision", "format", "p50 ms", "speed-up vs FP32", "size MB"):
        table.add_column(col, justify="right" if col in ("batch", "p50 ms", "speed-up vs FP32", "size MB") else "left")
    for r in sorted(results, key=lambda r: (r["model"], r["batch"], r["format"], r["precision"])):
        table.add_row(
            r["model"],
            str(r["batch"]),
            r["precision"],
            r["format"],
            f"{r['p50_ms']:.3f}",
            f"{r['ratio_vs_fp32']:.2f}×",
            f"{r['size_mb']:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
