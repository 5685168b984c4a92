"""``edge-export --push DEVICE --pick``: benchmark every candidate on the device, name the fastest that fits the budget.

Steps: ask the device which runtimes it has (a candidate whose runtime it lacks is listed as such, not run); push
what it lacks; run every candidate's benchmark ``rounds`` times, interleaved (round r starts at candidate r,
so a disturbance on the device spreads over all of them), keeping the raw samples; the first round also has the
device evaluate each candidate on the export's evaluation set. Hand them, with each candidate's accuracy and size,
to :func:`edge_opt.pick.pick`: the accuracy budget is measured on the device (every candidate's top-1 on the
evaluation set against the FP32 candidate's there) when the device evaluated them all, else on the host's test
split. The output folder gets the evidence: ``recommended.json`` (device, rule, every
candidate's p50 and 95% interval, accuracy, size, verdict) and ``recommended``, a symlink to the winner's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_agent.client import DeviceCallError
from edge_agent.files import write_durably
from edge_agent.formats import missing_runtime

from edge_opt.artifact import read_manifest
from edge_opt.evalset import push_eval_sets
from edge_opt.pick import DEFAULT_MAX_ACCURACY_DROP, Candidate, Pick, pick

RECOMMENDED = "recommended"


def pick_on_device(
    client: Any,
    folders: Sequence[Path],
    out_dir: Path,
    *,
    reference_accuracy: float | None,
    rounds: int = 3,
    settings: dict[str, Any] | None = None,
    max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP,
    on_round: Callable[[int, int], None] | None = None,
    refused: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Benchmark ``folders`` on the device behind ``client`` (an ``AgentClient``) and record the pick in ``out_dir``.

    A candidate is left out, with its reason, when it was refused at export (``refused``) or the device lacks its
    runtime (``skipped``), or when its push or a run of it fails on the device (``failed``); the others are still
    compared.

    Returns:
        ``{"device": info, "pick": Pick.to_dict(), "skipped": {name: reason}, "failed": {name: reason},
        "recommended": path or None}``.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    info = client.info()
    have = [r.get("name", "") for r in info.get("runtimes", [])]
    manifests = {folder: read_manifest(folder) for folder in folders}
    skipped = {name: f"refused at export: {why}" for name, why in (refused or {}).items()}
    failed: dict[str, str] = {}
    runnable: list[Path] = []
    shas = {}
    eval_shas: dict[Path, dict[str, str]] = {}
    for folder, manifest in manifests.items():
        if reason := missing_runtime(manifest["format"], have):
            skipped[folder.name] = reason
            continue
        try:
            shas[folder] = client.push(folder).sha256
            eval_shas[folder] = push_eval_sets(client, folder)
        except DeviceCallError as exc:
            if exc.device_wide:
                raise
            failed[folder.name] = f"the device refused its push: {exc.code}: {exc.details}"
            continue
        runnable.append(folder)
    samples: dict[Path, list[float]] = {f: [] for f in runnable}
    device_accuracy: dict[Path, float] = {}
    run_settings = {**(settings or {}), "keep_samples": True}
    for r in range(rounds):
        order = runnable[r % len(runnable) :] + runnable[: r % len(runnable)] if runnable else []
        for folder in order:
            if folder.name in failed:
                continue
            # The first round also evaluates each candidate on the device (after its timed loop, in the same worker).
            evaluate = eval_shas[folder] if r == 0 else {}
            last = _run(client, shas[folder], run_settings, evaluate)
            if "result" not in last:
                error = last.get("error", {})
                state = str(last.get("state", "FAILED")).removeprefix("RUN_STATE_")
                detail = f"{error.get('code', '')} {error.get('message', '')}".strip()
                failed[folder.name] = f"its run ended {state} on the device: {detail}"
                continue
            result = last["result"]
            samples[folder].extend(result["latency"].get("samples_ms") or [result["latency"]["p50_ms"]])
            evaluation = result.get("evaluation") or {}
            if not evaluation.get("error") and isinstance(evaluation.get("top1_accuracy"), (int, float)):
                device_accuracy[folder] = float(evaluation["top1_accuracy"])
        if on_round:
            on_round(r + 1, rounds)
    runnable = [f for f in runnable if f.name not in failed]
    # The budget is measured on one set of images: the device's evaluation set when the device evaluated every
    # candidate and an FP32 one among them (its accuracy is the reference), else the host's test split.
    fp32 = [f for f in runnable if manifests[f].get("precision") == "fp32"]
    on_device = bool(runnable) and len(device_accuracy) == len(runnable) and bool(fp32)
    if on_device:
        reference_accuracy = max(device_accuracy[f] for f in fp32)
    candidates = [
        Candidate(
            folder.name,
            samples[folder],
            device_accuracy[folder] if on_device else manifests[folder].get("host_metrics", {}).get("accuracy"),
            int(manifests[folder]["file"]["size_bytes"]),
            "device" if on_device else "host",
        )
        for folder in runnable
    ]
    result = pick(candidates, reference_accuracy=reference_accuracy, max_accuracy_drop=max_accuracy_drop)
    recommended = _record(out_dir, info, result, skipped, failed, rounds)
    return {
        "device": info,
        "pick": result.to_dict(),
        "skipped": skipped,
        "failed": failed,
        "recommended": str(recommended) if recommended else None,
    }


def _run(client: Any, sha256: str, settings: dict[str, Any], evaluate: dict[str, str]) -> dict[str, Any]:
    """One benchmark's last event; a refusal that concerns this run only is returned as its error."""
    try:
        last: dict[str, Any] = {}
        for event in client.bench(sha256, settings, **evaluate):
            last = event
        return last
    except DeviceCallError as exc:
        if exc.device_wide:
            raise
        return {"state": "REFUSED", "error": {"code": exc.code, "message": exc.details}}


def _record(
    out_dir: Path, info: dict[str, Any], result: Pick, skipped: dict[str, str], failed: dict[str, str], rounds: int
) -> Path | None:
    """``recommended.json`` (always) and the ``recommended`` symlink to the winner (replaced atomically)."""
    evidence = {
        "device": {k: info.get(k) for k in ("hostname", "arch", "cpu_model", "cpu_flags", "board_model", "suggested_target")},
        "rounds": rounds,
        "skipped": skipped,
        "failed": failed,
        **result.to_dict(),
    }
    write_durably(out_dir / f"{RECOMMENDED}.json", (json.dumps(evidence, indent=2) + "\n").encode())
    link = out_dir / RECOMMENDED
    if result.winner is None:
        link.unlink(missing_ok=True)
        return None
    staging = out_dir / f".{RECOMMENDED}.{os.getpid()}"
    staging.unlink(missing_ok=True)
    staging.symlink_to(result.winner.name)  # relative: the folder moves with its export
    staging.replace(link)
    return link


def print_pick(console: Any, address: str, data: dict[str, Any]) -> None:
    from rich.table import Table

    p = data["pick"]
    table = Table(title=f"pick on {address} (★ = recommended)", title_justify="left")
    for col in ("candidate", "p50 ms", "95% interval", "× fastest", "accuracy", "size MB", "verdict"):
        table.add_column(col, justify="left" if col in ("candidate", "verdict") else "right")
    for c in p["candidates"]:
        lo, hi = c["p50_interval_ms"]
        table.add_row(
            ("★ " if c["status"] == "winner" else "") + c["name"],
            f"{c['p50_ms']:.3f}" if c["p50_ms"] is not None else "-",
            f"{lo:.3f}–{hi:.3f}" if lo is not None and hi is not None else "-",
            f"{c['ratio_to_fastest']:.2f}" if c["ratio_to_fastest"] is not None else "-",
            f"{c['accuracy'] * 100:.2f}% ({c['accuracy_source']})" if c["accuracy"] is not None else "-",
            f"{c['size_bytes'] / 1e6:.2f}",
            f"{c['status']}: {c['reason']}" if c["reason"] else c["status"],
        )
    for name, reason in data["skipped"].items():
        table.add_row(name, "-", "-", "-", "-", "-", f"not run: {reason}")
    for name, reason in data.get("failed", {}).items():
        table.add_row(name, "-", "-", "-", "-", "-", f"[red]failed: {reason}[/red]")
    console.print(table)
    console.print(f"recommended: {data['recommended'] or 'none (no candidate within the budget)'}")
