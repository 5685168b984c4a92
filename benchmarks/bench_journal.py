"""The device's results journal at its bound, from one run on this machine (no agent, the journal alone):

with ``--keep-runs`` N (default 200) and every run keeping the maximum 20,000 latency samples and a 1,000-value
output sample, it appends runs until the last moment before a compaction (N + a quarter), then prints the file's
size, the slowest append (the one that compacted, when one did), and, in a fresh process, the time and peak memory
of opening the journal and the memory its records hold.

    python benchmarks/bench_journal.py [--keep-runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_agent.runs.journal import Journal

SAMPLES = 20_000


def fill(journal: Journal, start: int, count: int) -> float:
    """Append ``count`` finished runs with 20,000 samples each; returns the slowest finished append in seconds."""
    samples = [0.1 + i * 1e-6 for i in range(SAMPLES)]
    slowest = 0.0
    for i in range(start, start + count):
        journal.append(f"r{i}", "accepted", sha256="a" * 64, settings={"runtime": "onnxruntime", "iterations": 100})
        result = {"latency": {"p50_ms": 1.0, "samples_ms": samples}, "output_sample": [0.5] * 1000}
        started = time.perf_counter()
        journal.append(f"r{i}", "finished", state="SUCCEEDED", result=result)
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


def open_in_fresh_process(path: Path, keep: int) -> str:
    """Open the journal in a new interpreter: its time, and the peak (VmHWM) and resident memory of that process."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from edge_agent.runs.journal import Journal\n"
        "def mib(key):\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith(key)][0].split()[1]) / 1024\n"
        "before = mib('VmRSS')\n"
        "t = time.perf_counter()\n"
        "j = Journal(Path(sys.argv[1]), keep_runs=int(sys.argv[2]))\n"
        "took = time.perf_counter() - t\n"
        "runs = sum(r.terminal for r in j.records.values())\n"
        "print(f'open {took:.2f} s ({runs} runs): peak RSS {mib(\"VmHWM\"):.0f} MiB, after {mib(\"VmRSS\"):.0f} MiB, '\n"
        "      f'{before:.0f} MiB before opening')\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(path), str(keep)], capture_output=True, text=True, check=True)
    return run.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-runs", type=int, default=200)
    args = parser.parse_args()
    keep = args.keep_runs
    bound = keep + max(8, keep // 4)  # one more finished run and the journal compacts
    with tempfile.TemporaryDirectory(prefix="edge-journal-") as tmp:
        path = Path(tmp) / "journal.jsonl"
        journal = Journal(path, keep_runs=keep)
        fill(journal, 0, bound)
        print(f"--keep-runs {keep}: {bound} runs of {SAMPLES:,} samples, the most before a compaction")
        print(f"journal file {path.stat().st_size / 1e6:.1f} MB")
        print(open_in_fresh_process(path, keep))
        compaction = fill(journal, bound, 1)
        journal.close()
        print(f"the next run's append compacted it in {compaction:.2f} s, to {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
