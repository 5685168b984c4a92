"""``edge-fleet``: benchmark a set of artifacts on many devices at once, keep every result, report and compare.

    edge-fleet devices  --inventory fleet.yaml [--device NAME] [--tag TAG]
    edge-fleet bench    --inventory fleet.yaml ARTIFACT_DIR|EXPORT_DIR ... [--collection NAME] [--db results.sqlite]
    edge-fleet report   --collection NAME [--csv F] [--json-out F] [--html F]
    edge-fleet compare  BASELINE CANDIDATE [--min-effect 0.05] [--no-history]

-q prints only what needs attention (unreachable devices, regressions, failures; no progress), -v adds
tracebacks and every library warning; both go before or after the command.

The results store is ``--db`` (or ``$EDGE_FLEET_DB``): a SQLite file (default ``edge-fleet.sqlite``) or a
``postgresql://`` URL shared by several hosts.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.contract.arguments import ArgumentParser
from edge_agent.contract.result import EXIT_PARTIAL, EXIT_REGRESSION, ResultError
from edge_agent.contract.settings import BenchmarkSettings
from edge_agent.host.commands import UsageError, add_bench_options, add_model_file_options, bench_settings
from edge_agent.host.model_file import format_of, stage_model_file
from rich.console import Console
from rich.table import Table

from edge_opt.cli.command import Outcome, run_command
from edge_opt.errors import ConfigError
from edge_opt.fleet.compare import match_runs, print_compare


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("EDGE_FLEET_DB", "edge-fleet.sqlite"),
        help="SQLite file or postgresql:// URL (default edge-fleet.sqlite, or $EDGE_FLEET_DB)",
    )
    parser.add_argument("--json", action="store_true", help="versioned JSON result on stdout")
    _verbosity(parser, default=argparse.SUPPRESS)  # the main parser's value stands unless given after the command


def _verbosity(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="print only what needs attention: unreachable devices, regressions, failures (no progress, no full tables)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="show tracebacks and all library warnings"
    )


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", type=Path, required=True, help="YAML inventory of devices")
    parser.add_argument("--device", action="append", help="a device by name (repeatable; default all)")
    parser.add_argument("--tag", action="append", help="devices carrying this tag (repeatable)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call to a device (s)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="edge-fleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _verbosity(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True)
    devices = sub.add_parser("devices", help="check every device concurrently")
    _selection(devices)
    _common(devices)
    bench = sub.add_parser("bench", help="push and benchmark artifacts on the selected devices")
    _selection(bench)
    bench.add_argument(
        "artifacts",
        nargs="*",
        type=Path,
        help="artifact folders, export folders holding them, or model files (.onnx .pte .tflite)",
    )
    bench.add_argument(
        "--export-config",
        type=Path,
        metavar="CONFIG",
        help="run edge-export with this config first (into --export-out) and benchmark what it wrote",
    )
    bench.add_argument("--export-out", type=Path, default=Path("fleet-artifacts"), help="where --export-config writes")
    bench.add_argument("--collection", help="name of this collection (re-use it to complete a partial run)")
    add_bench_options(bench, keep_samples=False)  # the agent's settings and defaults; samples are always kept
    add_model_file_options(bench)
    bench.add_argument("--parallel", type=int, help="devices benchmarked at once (default: all)")
    _common(bench)
    report = sub.add_parser("report", help="one collection: table, CSV, JSON, HTML")
    report.add_argument("--collection", help="default: the newest")
    report.add_argument("--csv", type=Path)
    report.add_argument("--json-out", type=Path)
    report.add_argument("--html", type=Path)
    _common(report)
    compare = sub.add_parser("compare", help="regressions and improvements beyond the noise, and outlier devices")
    compare.add_argument("baseline")
    compare.add_argument("candidate")
    compare.add_argument(
        "--min-effect",
        type=float,
        default=0.05,
        help="the change that counts where a device has fewer than 5 past runs of the artifact (default 5%%); with "
        "them, their run-to-run spread sets it (tighter or wider, the output says which)",
    )
    compare.add_argument("--no-history", action="store_true", help="always --min-effect, whatever the history")
    _common(compare)
    return parser


def staged_model_files(files: list[Path], args: argparse.Namespace, settings: dict[str, Any], scratch: Path) -> list[Path]:
    """A user's ``.onnx`` / ``.pte`` files as they are: each read on the host and given the manifest a device needs,
    as ``edge-agent bench FILE`` does (``--input-shape`` fixes dynamic dimensions, ``--precision`` states the weights').

    Raises:
        ConfigError: a dynamic input without ``--input-shape``, a malformed shape or a file that is not a model.
    """
    from edge_agent.host.model_file import InputShapeError, manifest_for, parse_input_shape, read_model_file, resolve_input

    if (args.input_shape is not None or args.precision) and not files:
        raise ConfigError("--input-shape and --precision are for model files (.onnx .pte .tflite); folders carry their own")
    folders, misfits = [], []
    try:
        given = parse_input_shape(args.input_shape) if args.input_shape is not None else None
        for i, path in enumerate(files):
            model = read_model_file(path)
            resolved = resolve_input(model, given, settings.get("batch_size") if args.batch_size else None)
            misfits += [resolved.input_shape_misfit] if resolved.input_shape_misfit else []
            folders.append(stage_model_file(model, manifest_for(model, resolved, args.precision), scratch / str(i)))
    except (InputShapeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if files and len(misfits) == len(files):
        raise ConfigError(f"--input-shape fits none of the model files: {misfits[0]}")
    return folders


def artifact_folders(paths: list[Path]) -> list[Path]:
    """Artifact folders (manifest.json inside) given directly or inside export folders, each once (an export's
    ``recommended`` link to its pick's winner is not a second artifact)."""
    found: list[Path] = []
    for path in paths:
        if (path / "manifest.json").is_file():
            found.append(path)
        elif path.is_dir():
            inner = sorted(p.parent for p in path.glob("*/manifest.json") if not p.parent.is_symlink())
            if not inner:
                raise ConfigError(f"{path} holds no artifacts (folders with manifest.json); export with edge-export first")
            found.extend(inner)
        else:
            raise ConfigError(f"{path} does not exist; give artifact folders (with manifest.json) or export folders")
    unique: dict[Path, Path] = {}
    for folder in found:
        unique.setdefault(folder.resolve(), folder)
    return list(unique.values())


def exported_folders(config_path: Path, out: Path, *, quiet: bool) -> list[Path]:
    """Run the export job of ``config_path`` and return the artifact folders it wrote."""
    from edge_opt import progress
    from edge_opt.config import load_config
    from edge_opt.export.pipeline import run_export

    progress.set_enabled(not quiet)
    report = run_export(load_config(config_path), out)
    return [row.path for row in report.rows if row.path is not None]


def short_reason(exc: Any) -> str:
    """gRPC's UNAVAILABLE details are a paragraph; the last clause says what happened ("Connection refused")."""
    return f"{exc.code}: {str(exc.details).rsplit(': ', 1)[-1][:100]}"


def cmd_devices(args: argparse.Namespace, console: Console) -> Outcome:
    from edge_agent.host.client import AgentClient, DeviceCallError

    from edge_opt.fleet.collect import credentials_for
    from edge_opt.fleet.inventory import load_inventory

    devices = load_inventory(args.inventory).select(args.device, args.tag)

    def check(device: Any) -> dict[str, Any]:
        try:
            with AgentClient(device.address, credentials_for(device), timeout=args.timeout) as client:
                return {"name": device.name, "address": device.address, "reachable": True, "info": client.info()}
        except DeviceCallError as exc:
            return {"name": device.name, "address": device.address, "reachable": False, "reason": short_reason(exc)}
        except (OSError, ValueError) as exc:
            return {"name": device.name, "address": device.address, "reachable": False, "reason": str(exc)[:120]}

    with ThreadPoolExecutor(max_workers=max(1, len(devices))) as pool:
        results = list(pool.map(check, devices))
    table = Table(title="devices", title_justify="left")
    for col in ("device", "address", "reachable", "arch", "CPU", "INT8 features", "runtimes", "agent", "temp °C", "reason"):
        table.add_column(col)
    for r in results:
        if args.quiet and r["reachable"]:
            continue
        info = r.get("info") or {}
        runtimes = ", ".join(f"{x['name']} {x['version']}" for x in info.get("runtimes", []))
        temp = (info.get("state") or {}).get("temperature_c")
        table.add_row(
            r["name"],
            r["address"],
            "yes" if r["reachable"] else "[red]no[/red]",
            info.get("arch", ""),
            info.get("cpu_model", ""),
            " ".join(info.get("cpu_flags", [])),
            runtimes,
            info.get("agent_version", ""),
            "" if not isinstance(temp, float) or temp != temp else f"{temp:.0f}",
            r.get("reason", ""),
        )
    if not args.json and table.rows:
        console.print(table)
    errors: list[ResultError] = [
        {"code": "unreachable", "message": f"{r['name']}: {r.get('reason', '')}"} for r in results if not r["reachable"]
    ]
    return Outcome({"devices": results}, EXIT_PARTIAL if errors else 0, errors)


def collection_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark settings of a collection, checked against the agent's bounds (ConfigError naming the setting).

    Spelled out as collections always have been, defaults included: run ids hash the settings, so a collection
    begun with an earlier version completes instead of running again.
    """
    try:
        chosen = bench_settings(args)
    except UsageError as exc:
        raise ConfigError(f"benchmark setting: {exc}") from None
    d = BenchmarkSettings()
    defaults = {"iterations": d.iterations, "min_seconds": d.min_seconds, "warmup_runs": d.warmup_runs}
    defaults |= {"threads": d.threads, "batch_size": d.batch_size, "timeout_seconds": d.timeout_seconds}
    return {**defaults, **chosen, "keep_samples": True}


def cmd_bench(args: argparse.Namespace, console: Console) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="edge-fleet-files-") as scratch:  # model files' manifests, while they run
        return _bench(args, console, Path(scratch))


def _bench(args: argparse.Namespace, console: Console, scratch: Path) -> Outcome:
    from edge_opt.fleet.collect import Collector, load_artifacts
    from edge_opt.fleet.inventory import load_inventory
    from edge_opt.fleet.store import open_store

    settings = collection_settings(args)
    devices = load_inventory(args.inventory).select(args.device, args.tag)
    files = [p for p in args.artifacts if format_of(p) is not None and p.is_file()]
    folders = [p for p in args.artifacts if p not in files]
    if args.export_config:
        folders += exported_folders(args.export_config, args.export_out, quiet=args.quiet or args.json)
    if not folders and not files:
        raise ConfigError("nothing to benchmark: give artifact or export folders, model files, or --export-config CONFIG")
    artifacts = load_artifacts(artifact_folders(folders) + staged_model_files(files, args, settings, scratch))
    collection = args.collection or datetime.now(UTC).strftime("c%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", collection):
        raise ConfigError(f"collection name {collection!r} must match [A-Za-z0-9._-]{{1,64}}")
    results = open_store(args.db)

    def on_event(device: str, message: str) -> None:
        if not args.quiet and not args.json:
            console.print(f"[dim]{device}[/dim]: {message}", highlight=False)

    collector = Collector(results, collection, settings, call_timeout=args.timeout, on_event=on_event)
    outcomes = collector.run(devices, artifacts, workers=args.parallel)
    table = Table(title=f"collection {collection}: {len(devices)} devices × {len(artifacts)} artifacts", title_justify="left")
    for col in ("device", "reachable", "ran", "reused", "failed", "skipped", "pushed MB", "seconds", "reason"):
        table.add_column(col)
    for o in outcomes:
        reasons = [o.error] if o.error else []
        reasons += [f"{r['artifact']}: {r['error']['code']}" for r in o.runs if r.get("state") == "REFUSED"]
        reasons += [f"{name} not run: {why}" for name, why in o.skipped.items()]
        table.add_row(
            o.device,
            "yes" if o.reachable else "[red]no[/red]",
            str(o.succeeded - o.reused),
            str(o.reused),
            str(o.failed),
            str(len(o.skipped)),
            f"{o.pushed_bytes / 1e6:.2f}",
            f"{o.seconds:.1f}",
            "; ".join(reasons),
        )
    if not args.json:
        console.print(table)
    data = {"collection": collection, "devices": [o.__dict__ for o in outcomes]}
    errors: list[ResultError] = [
        {
            "code": "unreachable" if not o.reachable else "device-run",
            "message": f"{o.device}: {o.error or f'{o.failed} benchmark run(s) failed'}",
        }
        for o in outcomes
        if not o.complete
    ]
    errors += [
        {"code": "device-runtime", "message": f"{o.device} can run none of the artifacts: " + "; ".join(set(o.skipped.values()))}
        for o in outcomes
        if o.complete and o.skipped and not o.runs
    ]
    return Outcome(data, EXIT_PARTIAL if errors else 0, errors)


def cmd_report(args: argparse.Namespace, console: Console) -> Outcome:
    from edge_opt.fleet import report as rep
    from edge_opt.fleet.store import open_store

    results = open_store(args.db)
    known = results.collections()
    name = args.collection or (known[-1] if known else None)
    if name is None or name not in known:
        raise ConfigError(f"no collection {name!r} in {args.db}; known: {', '.join(known) or 'none'}")
    rows = rep.collection_rows(results, name)
    for path, writer in ((args.csv, rep.write_csv), (args.json_out, rep.write_json)):
        if path:
            writer(rows, path)
    if args.html:
        rep.write_html(rows, args.html, name)
    if not args.json and not args.quiet:
        console.print(rep.terminal_table(rows, f"collection {name}"))
    slim = [{k: v for k, v in r.items() if k not in ("samples_ms", "device_info", "history_ms")} for r in rows]
    return Outcome({"collection": name, "rows": slim})


def cmd_compare(args: argparse.Namespace, console: Console) -> Outcome:
    """Every run of the candidate collection against the baseline's run of the same bytes on the same device.

    The rule is :func:`edge_opt.device.round_stats.compare`: the threshold is ``--min-effect`` unless the device has at
    least MIN_HISTORY past runs of the artifact, whose run-to-run spread then sets it (tighter or wider).
    """
    from edge_opt.fleet import report as rep
    from edge_opt.fleet.outliers import outlier_devices
    from edge_opt.fleet.store import open_store

    if not 0 < args.min_effect < 10:
        raise ConfigError(f"--min-effect {args.min_effect}: a fraction above 0, e.g. 0.05 for 5%")
    results = open_store(args.db)
    known = results.collections()
    for name in (args.baseline, args.candidate):
        if name not in known:
            raise ConfigError(f"no collection {name!r} in {args.db}; known: {', '.join(known) or 'none'}")
    base = {(r["device"], r["sha256"]): r for r in rep.collection_rows(results, args.baseline) if r["state"] == "SUCCEEDED"}
    cand_rows = rep.collection_rows(results, args.candidate)
    verdicts, unmatched = match_runs(base, cand_rows, args.min_effect, use_history=not args.no_history)
    outliers = outlier_devices(cand_rows)
    regressions = sum(v["verdict"] == "regression" for v in verdicts)
    bases = {basis: sum(v["threshold_basis"] == basis for v in verdicts) for basis in ("default", "history: tightened",
                                                                                      "history: widened")}
    disturbed = sum(bool(v["disturbed"]) for v in verdicts)
    if not args.json:
        print_compare(console, args, verdicts, outliers, bases, disturbed, unmatched)
    data = {"verdicts": verdicts, "outliers": outliers, "regressions": regressions, "unmatched": unmatched,
            "thresholds": bases, "disturbed": disturbed}
    if regressions:
        return Outcome(data, EXIT_REGRESSION)
    if not verdicts:
        # A gate that compared nothing must not pass: re-exported artifacts have new hashes, new devices no history.
        message = (
            f"nothing to compare: no successful run of {args.candidate} has one of the same artifact bytes on the same "
            f"device in {args.baseline}; benchmark the same artifact folders in both collections"
        )
        return Outcome(data, EXIT_PARTIAL, [{"code": "nothing-compared", "message": message}])
    return Outcome(data, 0)


COMMANDS = {"devices": cmd_devices, "bench": cmd_bench, "report": cmd_report, "compare": cmd_compare}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from edge_opt import progress, quiet

    quiet.show_all_warnings(args.verbose)
    progress.set_enabled(not args.quiet)
    console = Console(width=None if sys.stdout.isatty() else 140, highlight=False)

    command = COMMANDS[args.command]
    return run_command(
        "edge-fleet", f"fleet {args.command}", lambda: command(args, console), json_output=args.json, verbose=args.verbose
    )


if __name__ == "__main__":
    sys.exit(main())
