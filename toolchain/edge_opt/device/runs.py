"""``edge-export --push HOST:PORT [--bench]``: send fresh artifacts to a device agent and benchmark them there.

The device client lives in ``edge_agent.host.client`` (it needs no torch); this module adds what the host knows:
the artifacts of this export, their host accuracy, a live progress line, a table, and result files kept under
``OUT/device-runs/<device>/<run_id>.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edge_agent.contract.files import write_durably
from edge_agent.contract.result import ResultError, strict_json
from edge_agent.host.client import PushOutcome
from edge_agent.host.session import SessionHooks, Target
from rich.console import Console
from rich.table import Table

from edge_opt import evalset, progress
from edge_opt.errors import ConfigError, DeviceError
from edge_opt.export.pipeline import ExportReport

#: What to check when a device cannot be reached or refuses us.
_DEVICE_FIX = "check that edge-agent serve runs there and that --token-file / --tls-ca match its settings"


def device_error(address: str, exc: Exception) -> DeviceError:
    """A device call's failure as the command's error; the connection hint only where it can be the cause."""
    from edge_agent.host.client import DeviceCallError

    if isinstance(exc, DeviceCallError) and not exc.device_wide:
        return DeviceError(f"device {exc}")
    where = exc if isinstance(exc, DeviceCallError) else f"{address}: {exc}"
    return DeviceError(f"device {where}; {_DEVICE_FIX}")


def credentials(token_file: Path | None, tls_ca: Path | None) -> Any:
    """The client credentials for a device: its token file (bearer token) and, for TLS, the CA that signed it.

    Raises:
        ConfigError: a file that does not exist (a usage mistake, found before any work).
        DeviceError: a file that cannot be used (unreadable, empty).
    """
    from edge_agent.host.client import Credentials

    for flag, path in (("--token-file", token_file), ("--tls-ca", tls_ca)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{flag} {path}: no such file; give the file the device's agent uses")
    try:
        return Credentials.from_files(token_file, tls_ca)
    except (OSError, ValueError) as exc:
        raise DeviceError(f"cannot use --token-file {token_file} / --tls-ca {tls_ca}: {exc}") from None


def device_target(address: str, *, token_file: Path | None, tls_ca: Path | None) -> str:
    """The target profile the device suggests for itself (from its CPU architecture and flags)."""
    from edge_agent.host.client import AgentClient, DeviceCallError

    try:
        with AgentClient(address, credentials(token_file, tls_ca)) as client:
            client.wait_ready(timeout=10)
            info = client.info()
    except DeviceCallError as exc:
        raise device_error(address, exc) from None
    target = str(info.get("suggested_target", ""))
    progress.status(f"device {address}: {info['arch']}, {info['cpu_model']} → target {target or 'host'}")
    return target


def push_and_bench(
    report: ExportReport,
    address: str,
    *,
    token_file: Path | None,
    tls_ca: Path | None,
    bench: bool,
    settings: dict[str, Any],
) -> list[dict[str, Any]]:
    """Push every written artifact of ``report`` the device can run (only what it lacks); benchmark them if asked.

    The work is one :class:`edge_agent.host.session.DeviceSession`: an artifact whose runtime the device lacks is
    not pushed: its row says why (``skipped``). A refusal that concerns one artifact (its push or its run) is that
    row's ``error``; the others still run. Only a device that cannot be reached or refuses us raises (the result
    files of the runs that ended before are kept).

    Raises:
        DeviceError: the device cannot be reached, refused the credentials or stopped answering.
    """
    from edge_agent.host.client import AgentClient, DeviceCallError
    from edge_agent.host.session import DeviceSession, Target

    creds = credentials(token_file, tls_ca)
    targets = []
    for row in report.rows:
        if row.path is None:
            continue
        inputs, reference = (evalset.folders_of(row.path) if bench else None) or (None, None)
        fields = {"host_accuracy": row.accuracy, "precision": row.precision.value, "format": row.format.value}
        targets.append(
            Target(row.path.name, row.path, row.format.value, eval_set=inputs, eval_reference=reference, fields=fields)
        )
    device_dir = report.out_dir / "device-runs" / re.sub(r"[^A-Za-z0-9._-]", "_", address)
    try:
        with AgentClient(address, creds) as client:
            hooks = _ExportHooks(address, report.target.name, device_dir)
            result = DeviceSession(client, settings, bench=bench, wait_ready=10, hooks=hooks).run_all(targets)
    except (DeviceCallError, OSError, ValueError) as exc:
        raise device_error(address, exc) from None
    if result.device_error:
        raise device_error(address, result.device_error)
    return result.entries


class _ExportHooks(SessionHooks):
    """``edge-export --push``'s view of its session: status lines, a live progress line, the device check and a
    result file per run under ``OUT/device-runs/<device>/<run_id>.json``."""

    def __init__(self, address: str, built_for: str, device_dir: Path) -> None:
        self.address = address
        self.built_for = built_for
        self.device_dir = device_dir
        self.info: dict[str, Any] = {}
        self.live = False

    def device(self, info: dict[str, Any]) -> None:
        self.info = info
        suggested = info.get("suggested_target")
        progress.status(f"device {self.address}: {info['arch']}, {info['cpu_model']}, suggested target {suggested}")
        if suggested and suggested != self.built_for:
            progress.status(
                f"[yellow]warning:[/yellow] artifacts were built for {self.built_for}, the device suggests "
                f"{suggested}: re-export with --target {suggested}"
            )

    def pushed(self, target: Target, entry: dict[str, Any], push: PushOutcome) -> None:
        entry["push"] = push.__dict__
        verb = "already on the device" if push.already_present else f"pushed {push.bytes_sent / 1e6:.2f} MB"
        progress.status(f"{target.label}: {verb}")

    def event(self, target: Target, event: dict[str, Any]) -> None:
        if "progress" in event:
            p = event["progress"]
            self.live = True
            progress.live(f"{target.label} on {self.address}: {p['phase']} {p['done']}/{p['total']}")
        elif "queue_position" in event:
            progress.status(f"{target.label}: queued on the device (position {event['queue_position']})")

    def benched(self, target: Target, entry: dict[str, Any]) -> None:
        self._clear_live()
        entry["device_check"] = device_check(target.folder, entry)
        self.device_dir.mkdir(parents=True, exist_ok=True)
        write_durably(
            self.device_dir / f"{entry.get('run_id', 'run')}.json", strict_json({**entry, "device": self.info}).encode()
        )

    def finished(self, target: Target, entry: dict[str, Any]) -> None:
        self._clear_live()
        if "skipped" in entry:
            progress.status(f"{target.label}: not pushed: {entry['skipped']}")
        elif entry.get("state") == "REFUSED":
            error = entry["error"]
            progress.status(f"{target.label}: refused by the device: {error['code']}: {error['message']}")

    def _clear_live(self) -> None:
        if self.live:
            progress.live("")
            self.live = False


def device_check(artifact: Path, last: dict[str, Any]) -> dict[str, Any] | None:
    """The device's evaluation beside the host's figures on the same images, and what disagrees beyond the gates."""
    evaluation = (last.get("result") or {}).get("evaluation")
    if not evaluation:
        return None
    try:
        manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    record = (manifest.get("host_metrics") or {}).get("device_evaluation") or {}
    return {
        **evaluation,
        "host_accuracy": record.get("host_accuracy"),
        "host_evaluation_mode": ((manifest.get("host_metrics") or {}).get("evaluation") or {}).get("mode"),
        "flags": evalset.flags(evaluation, record.get("reference_scale")),
    }


def check_cells(check: dict[str, Any] | None) -> list[str]:
    """device accuracy, host accuracy on the same items, top-1 agreement, SQNR against the host's outputs, largest
    output difference."""
    if not check or check.get("error"):
        return ["-"] * len(_CHECK_COLUMNS)
    return [
        _percent(check.get("top1_accuracy")),
        _percent(check.get("host_accuracy")),
        "-" if check.get("agreement_with_host") is None else f"{check['agreement_with_host'] * 100:.1f}%",
        "-" if check.get("sqnr_db") is None else f"{check['sqnr_db']:.1f}",
        "-" if check.get("max_abs_diff") is None else f"{check['max_abs_diff']:.2g}",
    ]


_CHECK_COLUMNS = ("device acc", "host (same)", "agree", "SQNR dB", "max diff")


def _percent(value: float | None) -> str:
    """A fraction as a percentage; "-" where the data has no labels (fidelity is the metric then)."""
    return "-" if value is None else f"{value * 100:.2f}%"


def device_table(address: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"on device {address}", title_justify="left")
    latency = ("p50 ms", "p90 ms", "p99 ms", "items/s", "load s", "peak RSS MiB")
    columns = ("artifact", "host accuracy", *_CHECK_COLUMNS, *latency, "note")
    for col in columns:
        table.add_column(col, justify="left" if col in ("artifact", "note") else "right")
    for row in rows:
        if "result" in row:
            r = row["result"]
            lat = r["latency"]
            check = row.get("device_check")
            notes = ["disturbed: " + "; ".join(r["warnings"])] if r.get("disturbed") else []
            if flags := (check or {}).get("flags"):
                notes.append("[red]outputs disagree: " + "; ".join(flags) + "[/red]")
            note = "; ".join(notes)
            table.add_row(
                row["artifact"],
                _percent(row["host_accuracy"]),
                *check_cells(check),
                f"{lat['p50_ms']:.3f}",
                f"{lat['p90_ms']:.3f}",
                f"{lat['p99_ms']:.3f}",
                f"{lat['throughput_per_s']:.0f}",
                f"{r['load_seconds']:.2f}",
                f"{int(r['peak_rss_bytes']) / 2**20:.0f}",
                note,
            )
        elif "skipped" in row:
            blank = ["-"] * (len(_CHECK_COLUMNS) + 6)
            table.add_row(row["artifact"], _percent(row["host_accuracy"]), *blank, f"not run: {row['skipped']}")
        elif "error" in row:
            table.add_row(
                row["artifact"],
                _percent(row["host_accuracy"]),
                *["-"] * (len(_CHECK_COLUMNS) + 6),
                f"{row['error'].get('code')}: {row['error'].get('message')}",
            )
        else:
            table.add_row(row["artifact"], _percent(row["host_accuracy"]), *["-"] * (len(_CHECK_COLUMNS) + 6), "pushed")
    return table


def device_failures(rows: list[dict[str, Any]], *, bench: bool) -> list[ResultError]:
    """One error per artifact whose push was refused, whose device run did not succeed or whose outputs disagree
    with the host's; and one when the device could run none of them. An artifact skipped because the device lacks
    its runtime is not a failure by itself (its row says so)."""
    failures: list[ResultError] = []
    for row in rows:
        if "skipped" in row:
            continue
        if row.get("state") == "REFUSED":
            error = row["error"]
            failures.append({"code": "device-refused", "message": f"{row['artifact']}: {error['code']}: {error['message']}"})
        elif not bench:
            continue
        elif "result" not in row:
            error = row.get("error") or {}
            state = str(row.get("state", "FAILED")).removeprefix("RUN_STATE_")
            detail = f"{error.get('code', state)}: {error.get('message', 'no result')}"
            failures.append({"code": "device-run", "message": f"{row['artifact']}: the device run ended {state} ({detail})"})
        elif flags := (row.get("device_check") or {}).get("flags"):
            failures.append({"code": "device-check", "message": f"{row['artifact']}: " + "; ".join(flags)})
    if rows and all("skipped" in row for row in rows):
        reasons = sorted({row["skipped"] for row in rows})
        message = "the device can run none of these artifacts: " + "; ".join(reasons)
        failures.append({"code": "device-runtime", "message": message})
    return failures


def print_device_rows(console: Console, address: str, rows: list[dict[str, Any]]) -> None:
    console.print(device_table(address, rows))
