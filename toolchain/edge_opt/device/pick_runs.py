"""``edge-export --push DEVICE --pick``: time every candidate on the device in rounds, name the fastest within budget.

Steps: ask the device which runtimes it has (a candidate whose runtime it lacks is listed as such, not run); push
what it lacks; then rounds. A round runs each candidate once, each run in a fresh worker process on the device
(the agent starts one per run), in rotated order (round r starts at candidate r, so a disturbance spreads over all
of them); the round's figure for that candidate is its run's median. The first round also has the device
evaluate each candidate on the export's evaluation set. The statistics are :mod:`edge_opt.device.round_stats`'s, the
rule :mod:`edge_opt.device.pick`'s; the accuracy budget is measured on the device (every candidate's top-1 on the
evaluation set against the FP32 candidate's there) when the device evaluated them all, else on the host's test
split.

**Adaptive rounds.** The first ``rounds`` rounds (default 3) run every candidate. After each of them and of every
later round the pick is made; it stops as soon as it is decided (the fastest separated from every other
candidate in budget, or every tie settled within the gap). Otherwise one more round runs, for the fastest and the
candidates tied with it only, until ``max_rounds`` rounds (default 12) or ``max_seconds`` (default 600: no round
starts that the last runs' durations say would end past it). The result says which: "separated after 3 rounds",
"tie after the 12-round budget: A and B, broken by size".

**Disturbed runs.** The agent marks a run disturbed when other processes used more than half a core on average,
or the CPU was throttled, hot or lost 20% of its frequency (its ``warnings`` say which). A disturbed run is redone
at once, in a fresh worker, and the redo replaces it; after two redos in a row that were disturbed too, the
device is taken to be busy and no more redos are made. A candidate's figure then leaves its disturbed rounds out
as long as at least :data:`MIN_CLEAN_ROUNDS` clean ones remain, else uses them and says so. Redos, rounds left
out and disturbed rounds used are counted per candidate and in total, in the table and the JSON.

The output folder gets the evidence: ``recommended.json`` (device, rule, every candidate's rounds, figure,
interval, accuracy, size and verdict, how the rounds ended, the disturbances) and ``recommended``, a symlink to
the winner's folder.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.contract.files import write_durably
from edge_agent.contract.result import strict_json
from edge_agent.host.client import DeviceCallError
from edge_agent.host.session import DeviceSession, Target, run_benchmark

from edge_opt.device.pick import DEFAULT_MAX_ACCURACY_DROP, DEFAULT_MAX_TIE_GAP, Candidate, Pick, pick
from edge_opt.evalset import folders_of
from edge_opt.export.artifact import read_manifest

RECOMMENDED = "recommended"
DEFAULT_ROUNDS = 3
DEFAULT_MAX_ROUNDS = 12
DEFAULT_MAX_SECONDS = 600.0
#: A candidate's disturbed rounds are left out while it keeps at least this many clean ones.
MIN_CLEAN_ROUNDS = 2
#: Redos in a row that were disturbed too, after which the device is taken to be busy and nothing more is redone.
MAX_DISTURBED_REDOS = 2


@dataclass
class _Round:
    """One candidate's run in one round (the redo, when the first was disturbed)."""

    round: int
    median_ms: float
    calls: int
    seconds: float
    disturbed: bool
    redone: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class _State:
    """What the rounds gathered so far."""

    runs: dict[Path, list[_Round]]
    accuracy: dict[Path, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    disturbed_redos_in_a_row: int = 0
    redos_stopped: bool = False

    def alive(self) -> list[Path]:
        return [f for f in self.runs if f.name not in self.failed]


def pick_on_device(
    client: Any,
    folders: Sequence[Path],
    out_dir: Path,
    *,
    reference_accuracy: float | None,
    rounds: int = DEFAULT_ROUNDS,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    settings: dict[str, Any] | None = None,
    max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP,
    max_tie_gap: float = DEFAULT_MAX_TIE_GAP,
    on_round: Callable[[int, str], None] | None = None,
    refused: dict[str, str] | None = None,
    left_out: dict[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Time ``folders`` on the device behind ``client`` (an ``AgentClient``) and record the pick in ``out_dir``.

    ``rounds`` rounds always run; up to ``max_rounds`` (at least ``rounds``) and ``max_seconds`` while the pick is
    not decided. A candidate is left out, with its reason, when it was refused at export (``refused``) or the
    device lacks its runtime (``skipped``), or when its push or a run of it fails on the device (``failed``); the
    others are still compared. ``left_out`` names candidates the caller left out of ``folders`` and why (a
    fidelity floor): they join ``skipped`` as given.

    Returns:
        ``{"device": info, "pick": Pick.to_dict(), "rounds": n, "stop": {...}, "disturbance": {...},
        "skipped": {name: reason}, "failed": {name: reason}, "recommended": path or None}``.
    """
    if rounds < 1 or max_seconds <= 0:
        raise ValueError("rounds must be at least 1 and max_seconds positive")
    max_rounds = max(rounds, max_rounds)
    session = DeviceSession(client, bench=False)
    info = session.open()
    manifests = {folder: read_manifest(folder) for folder in folders}
    skipped = {name: f"refused at export: {why}" for name, why in (refused or {}).items()} | dict(left_out or {})
    state = _State({})
    shas: dict[Path, str] = {}
    eval_shas: dict[Path, dict[str, str]] = {}
    for folder, manifest in manifests.items():
        inputs, reference = folders_of(folder) or (None, None)
        target = Target(folder.name, folder, manifest["format"], eval_set=inputs, eval_reference=reference)
        if reason := session.missing_runtime(target):
            skipped[folder.name] = reason
            continue
        try:
            pushed = session.push(target)
        except DeviceCallError as exc:
            if exc.device_wide:
                raise
            state.failed[folder.name] = f"the device refused its push: {exc.code}: {exc.details}"
            continue
        shas[folder], eval_shas[folder] = pushed.sha256, pushed.eval_shas
        state.runs[folder] = []
    run_settings = {**(settings or {}), "keep_samples": False}  # a round needs its run's median, not every call

    def decide() -> Pick:
        return pick(_candidates(state, manifests), reference_accuracy=_reference(state, manifests, reference_accuracy),
                    max_accuracy_drop=max_accuracy_drop, max_tie_gap=max_tie_gap)

    started = clock()
    active = state.alive()
    result, stop, done = decide(), "no candidate", 0
    while active:
        if on_round:
            extra = "" if done < rounds else f" (adding rounds: {', '.join(f.name for f in active)})"
            on_round(done + 1, f"round {done + 1} of {rounds}–{max_rounds}: {len(active)} candidates{extra}")
        shift = done % len(active)
        for folder in active[shift:] + active[:shift]:
            _time_round(client, folder, shas[folder], run_settings, eval_shas[folder] if done == 0 else {}, done + 1,
                        state, budget_left=lambda: max_seconds - (clock() - started), clock=clock)
        done += 1
        result = decide()
        alive = state.alive()
        if not alive:
            break
        if done < rounds:
            active = alive
            continue
        if result.decided or result.winner is None:
            stop = result.decided or "no candidate"
            break
        if done >= max_rounds:
            stop = "rounds"
            break
        by_name = {f.name: f for f in alive}
        active = [by_name[c.name] for c in result.tie_set]
        if clock() - started + sum(state.runs[f][-1].seconds for f in active) > max_seconds:
            stop = "seconds"
            break
    seconds = clock() - started
    disturbance = _disturbance(state)
    ending = {"reason": stop, "rounds": done, "seconds": round(seconds, 1),
              "text": _stop_text(stop, done, max_rounds, max_seconds, max_tie_gap, result)}
    data = {
        "device": info,
        "pick": result.to_dict(),
        "rounds": done,
        "rounds_planned": [rounds, max_rounds],
        "max_seconds": max_seconds,
        "stop": ending,
        "disturbance": disturbance,
        "round_log": {f.name: [asdict(r) for r in state.runs[f]] for f in state.alive()},
        "skipped": skipped,
        "failed": state.failed,
    }
    recommended = _record(out_dir, data, result)
    data["recommended"] = str(recommended) if recommended else None
    return data


def _time_round(
    client: Any,
    folder: Path,
    sha256: str,
    settings: dict[str, Any],
    evaluate: dict[str, str],
    number: int,
    state: _State,
    *,
    budget_left: Callable[[], float],
    clock: Callable[[], float],
) -> None:
    """One candidate's run in round ``number`` (redone once when disturbed), into ``state``."""
    if folder.name in state.failed:
        return
    last, took = _timed(client, sha256, settings, evaluate, clock)
    redone = False
    if "result" in last and last["result"].get("disturbed") and not state.redos_stopped and budget_left() > took:
        _keep_accuracy(state, folder, last["result"])  # the evaluation ran after the timed loop: it stands
        last, took = _timed(client, sha256, settings, {}, clock)
        redone = True
        if "result" in last:
            busy = bool(last["result"].get("disturbed"))
            state.disturbed_redos_in_a_row = state.disturbed_redos_in_a_row + 1 if busy else 0
            state.redos_stopped = state.disturbed_redos_in_a_row >= MAX_DISTURBED_REDOS
    if "result" not in last:
        error = last.get("error", {})
        run_state = str(last.get("state", "FAILED")).removeprefix("RUN_STATE_")
        detail = f"{error.get('code', '')} {error.get('message', '')}".strip()
        state.failed[folder.name] = f"its run ended {run_state} on the device: {detail}"
        return
    result = last["result"]
    _keep_accuracy(state, folder, result)
    latency = result["latency"]
    state.runs[folder].append(
        _Round(number, float(latency["p50_ms"]), int(latency.get("count") or 0), round(took, 3),
               bool(result.get("disturbed")), redone, list(result.get("warnings") or []))
    )


def _timed(
    client: Any, sha256: str, settings: dict[str, Any], evaluate: dict[str, str], clock: Callable[[], float]
) -> tuple[dict[str, Any], float]:
    """One benchmark's last event and how long it took; a refusal that concerns this run only is its error."""
    started = clock()
    last = run_benchmark(client, sha256, settings, eval_shas=evaluate)
    return last, clock() - started


def _keep_accuracy(state: _State, folder: Path, result: dict[str, Any]) -> None:
    evaluation = result.get("evaluation") or {}
    if not evaluation.get("error") and isinstance(evaluation.get("top1_accuracy"), int | float):
        state.accuracy[folder] = float(evaluation["top1_accuracy"])


def _on_device(state: _State, manifests: dict[Path, dict[str, Any]]) -> bool:
    """Did the device evaluate every candidate, an FP32 one among them? Then the budget is the device's."""
    alive = state.alive()
    fp32 = [f for f in alive if manifests[f].get("precision") == "fp32"]
    return bool(alive) and all(f in state.accuracy for f in alive) and bool(fp32)


def _reference(state: _State, manifests: dict[Path, dict[str, Any]], host_reference: float | None) -> float | None:
    if not _on_device(state, manifests):
        return host_reference
    return max(state.accuracy[f] for f in state.alive() if manifests[f].get("precision") == "fp32")


def _candidates(state: _State, manifests: dict[Path, dict[str, Any]]) -> list[Candidate]:
    """Every candidate still in the pick, from its rounds: the clean ones while there are enough of them."""
    on_device = _on_device(state, manifests)
    out = []
    for folder in state.alive():
        runs = state.runs[folder]
        clean = [r for r in runs if not r.disturbed]
        used = clean if len(clean) >= MIN_CLEAN_ROUNDS else runs
        manifest = manifests[folder]
        out.append(
            Candidate(
                folder.name,
                [r.median_ms for r in used],
                state.accuracy.get(folder) if on_device else manifest.get("host_metrics", {}).get("accuracy"),
                int(manifest["file"]["size_bytes"]),
                "device" if on_device else "host",
                calls=sum(r.calls for r in used),
                rounds_excluded=len(runs) - len(used),
                rounds_disturbed=sum(r.disturbed for r in used),
                rounds_redone=sum(r.redone for r in runs),
            )
        )
    return out


def _disturbance(state: _State) -> dict[str, Any]:
    """Totals over the pick: runs redone, rounds left out, disturbed rounds used, and what the device said."""
    runs = [r for f in state.alive() for r in state.runs[f]]
    clean = {f: sum(not r.disturbed for r in state.runs[f]) for f in state.alive()}
    excluded = sum(sum(r.disturbed for r in state.runs[f]) for f in state.alive() if clean[f] >= MIN_CLEAN_ROUNDS)
    used = sum(sum(r.disturbed for r in state.runs[f]) for f in state.alive() if clean[f] < MIN_CLEAN_ROUNDS)
    return {
        "runs": len(runs),
        "redone": sum(r.redone for r in runs),
        "excluded": excluded,
        "used": used,
        "redos_stopped": state.redos_stopped,
        "warnings": _warning_kinds([w for r in runs for w in r.warnings]),
    }


_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


def _warning_kinds(warnings: list[str]) -> list[str]:
    """The device's warnings, one line per kind with the range of its figure: 'other processes used 1.3–1.5 CPU
    cores on average during the run (24 runs)'."""
    kinds: dict[str, list[float]] = {}
    for warning in warnings:
        found = _NUMBER.search(warning)
        key = _NUMBER.sub("{}", warning, count=1)
        kinds.setdefault(key, []).append(float(found.group()) if found else math.nan)
    out = []
    for key, values in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        finite = [v for v in values if math.isfinite(v)]
        figure = "" if not finite else f"{min(finite):g}" if min(finite) == max(finite) else f"{min(finite):g}–{max(finite):g}"
        out.append(f"{key.replace('{}', figure, 1)} ({len(values)} run{'s' if len(values) > 1 else ''})")
    return out


def _stop_text(stop: str, done: int, max_rounds: int, max_seconds: float, gap: float, result: Pick) -> str:
    """How the rounds ended, in words: 'separated after 3 rounds', 'tie after the 12-round budget: A and B, ...'."""
    rounds = f"{done} round{'s' if done != 1 else ''}"
    if result.winner is None:
        return f"no candidate within the budget after {rounds}"
    tie = result.summary().removeprefix("tie: ")
    if stop == "separated":
        return f"separated after {rounds}"
    if stop == "settled":
        return f"tie within the {gap * 100:g}% gap after {rounds} (more rounds would not change it): {tie}"
    if stop == "seconds":
        return f"tie at the {max_seconds:g}-s budget, after {rounds}: {tie}"
    return f"tie after the {max_rounds}-round budget: {tie}"


def _record(out_dir: Path, data: dict[str, Any], result: Pick) -> Path | None:
    """``recommended.json`` (always) and the ``recommended`` symlink to the winner (replaced atomically)."""
    info = data["device"]
    evidence = {
        "device": {k: info.get(k) for k in ("hostname", "arch", "cpu_model", "cpu_flags", "board_model", "suggested_target")},
        **{k: data[k] for k in ("rounds", "rounds_planned", "max_seconds", "stop", "disturbance", "round_log")},
        "skipped": data["skipped"],
        "failed": data["failed"],
        **result.to_dict(),
    }
    write_durably(out_dir / f"{RECOMMENDED}.json", (strict_json(evidence) + "\n").encode())
    link = out_dir / RECOMMENDED
    if result.winner is None:
        link.unlink(missing_ok=True)
        return None
    staging = out_dir / f".{RECOMMENDED}.{os.getpid()}"
    staging.unlink(missing_ok=True)
    staging.symlink_to(result.winner.name)  # relative: the folder moves with its export
    staging.replace(link)
    return link


def _rounds_cell(c: dict[str, Any]) -> str:
    notes = [f"{c[k]} {label}" for k, label in (("rounds_excluded", "left out"), ("rounds_disturbed", "disturbed"),
                                                 ("rounds_redone", "redone")) if c.get(k)]
    return str(c["rounds"]) + (f" ({', '.join(notes)})" if notes else "")


def print_pick(console: Any, address: str, data: dict[str, Any]) -> None:
    from rich.table import Table

    p = data["pick"]
    table = Table(title=f"pick on {address} (★ = recommended)", title_justify="left")
    for col in ("candidate", "p50 ms", "95% interval", "width", "from", "rounds", "× fastest", "accuracy", "size MB",
                "verdict"):
        table.add_column(col, justify="left" if col in ("candidate", "from", "rounds", "verdict") else "right")
    for c in p["candidates"]:
        lo, hi = c["interval_ms"]
        table.add_row(
            ("★ " if c["status"] == "winner" else "") + c["name"],
            f"{c['p50_ms']:.3f}" if c["p50_ms"] is not None else "-",
            f"{lo:.3f}–{hi:.3f}" if lo is not None and hi is not None else "-",
            f"{c['interval_width'] * 100:.0f}%" if c["interval_width"] is not None else "-",
            c.get("interval_basis", ""),
            _rounds_cell(c),
            f"{c['ratio_to_fastest']:.2f}" if c["ratio_to_fastest"] is not None else "-",
            f"{c['accuracy'] * 100:.2f}% ({c['accuracy_source']})" if c["accuracy"] is not None else "-",
            f"{c['size_bytes'] / 1e6:.2f}",
            f"{c['status']}: {c['reason']}" if c["reason"] else c["status"],
        )
    for name, reason in data["skipped"].items():
        table.add_row(name, *["-"] * 8, f"not run: {reason}")
    for name, reason in data.get("failed", {}).items():
        table.add_row(name, *["-"] * 8, f"[red]failed: {reason}[/red]")
    console.print(table)
    stop = data.get("stop") or {}
    console.print(f"rounds: {stop.get('text', '')} ({stop.get('seconds', 0):.0f} s)")
    console.print(f"interval: {p['rule']['interval']}" + (f"; {p['pooled_spread']['source']}" if p.get("pooled_spread") else ""))
    d = data.get("disturbance") or {}
    if d.get("redone") or d.get("excluded") or d.get("used"):
        busy = "; redos stopped: the device stayed disturbed" if d.get("redos_stopped") else ""
        console.print(
            f"[yellow]disturbed runs[/yellow]: {d['redone']} redone, {d['excluded']} rounds left out, {d['used']} used for "
            f"lack of clean ones{busy} ({'; '.join(d.get('warnings', [])[:2])})"
        )
    console.print(f"recommended: {data['recommended'] or 'none (no candidate within the budget)'}")
