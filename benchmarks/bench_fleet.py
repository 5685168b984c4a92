"""How fleet collection scales: N agents as subprocesses on 127.0.0.1, one tiny artifact, tiny benchmark settings,
so that what is measured is the collector (push, stream, store), not the models.

    python benchmarks/bench_fleet.py [--sizes 1,2,4,8,16,32,64] [--json]

Prints, per N: total collection time, the collector's CPU time (user + system of this process) per device, and
the agents' start-up time. One machine, one run: on a 2-core host the N agents and their N benchmark workers
share the same two cores as the collector.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from edge_opt.fleet.collect import Collector, load_artifacts
from edge_opt.fleet.inventory import Device
from edge_opt.fleet.store import open_store

REPO_TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(REPO_TESTS)]
from agent_helpers import AgentProcess, tiny_onnx_bytes, write_artifact  # noqa: E402

TOKEN = "fleet-benchmark-token-0123456789"


def start_agents(n: int, root: Path, token: Path) -> tuple[list[AgentProcess], list[int], float]:
    """Start n agents at once and wait until each serves: the agents, their ports and the seconds it took."""
    started = time.perf_counter()
    agents = [AgentProcess(root / f"s{i}", token) for i in range(n)]
    for agent in agents:
        agent.spawn(keep_stderr=False)
    ports = [agent.wait_serving(120) for agent in agents]
    return agents, ports, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            token = root / "token"
            token.write_text(TOKEN)
            artifact = write_artifact(root / "art" / "tiny-onnx", tiny_onnx_bytes(10), accuracy=0.5)
            agents, ports, start_s = start_agents(n, root, token)
            try:
                devices = [Device(name=f"d{i}", address=f"127.0.0.1:{p}", token_file=token) for i, p in enumerate(ports)]
                results = open_store(str(root / "r.sqlite"))
                # 0 means "the agent default" on the wire, so the smallest bounds are spelled as tiny positive values.
                settings = {
                    "iterations": 1,
                    "min_seconds": 0.001,
                    "warmup_runs": -1,
                    "warmup_min_seconds": 0.001,
                    "keep_samples": True,
                    "timeout_seconds": 600,
                }
                before = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                outcomes = Collector(results, "scale", settings, call_timeout=120).run(devices, load_artifacts([artifact]))
                wall = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_SELF)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                ok = sum(o.complete for o in outcomes)
            finally:
                for agent in agents:  # all stop at once
                    agent.proc.terminate()  # type: ignore[union-attr]
                for agent in agents:
                    agent.proc.wait(30)  # type: ignore[union-attr]
                    agent.close()
        row = {
            "agents": n,
            "complete": ok,
            "collection_s": wall,
            "collector_cpu_ms_per_device": cpu * 1000 / n,
            "agents_start_s": start_s,
        }
        results.append(row)
        if not args.json:
            print(
                f"N={n:>3}  complete {ok:>3}/{n:<3}  collection {wall:7.2f} s  ({wall / n * 1000:7.1f} ms/device)  "
                f"collector CPU {row['collector_cpu_ms_per_device']:6.1f} ms/device  agents up in {start_s:6.2f} s",
                flush=True,
            )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
