"""Concurrent collection: every selected device at once, each in its own thread, none able to stall the others.

For each device: ask what it is, push what it lacks, then benchmark every artifact. Run ids are deterministic,
``<collection>-<sha256[:16]>-<settings digest>-a<attempt>``, so a re-run of the same collection finds what each
device already did in its own journal:

* the latest attempt SUCCEEDED → it is recorded (again: the store upserts by (device, run_id)) and not re-run;
* it is still QUEUED or RUNNING → the stream is re-attached;
* it FAILED, TIMED_OUT or was INTERRUPTED (the agent died) → a new attempt runs.

A device that cannot be reached, or that drops and does not come back within the client's re-attach budget, is
reported with the reason; the others carry on. An artifact whose runtime a device lacks is skipped there (named
with the reason); a push or run the device refuses counts as that artifact's failed run, and the device goes on with
the next. Every call has a deadline.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.host.client import AgentClient, Credentials, PushOutcome
from edge_agent.host.session import AttemptPlanner, DeviceSession, SessionHooks, Target

from edge_opt.errors import ConfigError
from edge_opt.evalset import folders_of
from edge_opt.export.artifact import read_manifest
from edge_opt.fleet.inventory import Device
from edge_opt.fleet.results import ResultsStore


@dataclass
class DeviceOutcome:
    device: str
    reachable: bool = False
    succeeded: int = 0
    failed: int = 0
    reused: int = 0
    pushed_bytes: int = 0
    error: str = ""
    seconds: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: Artifacts not run on this device because it lacks their runtime: name → why (not a failure).
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.reachable and not self.error and self.failed == 0


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def credentials_for(device: Device) -> Credentials:
    return Credentials.from_files(device.token_file, device.tls_ca, device.client_cert, device.client_key, device.server_name)


def load_artifacts(folders: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Each folder's manifest, checked (schema, and the model file's sha256) before anything is pushed.

    Raises:
        ConfigError: a folder that is not an intact artifact, naming it and the fix.
    """
    out = []
    for folder in folders:
        try:
            out.append((folder, read_manifest(folder)))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return out


class Collector:
    def __init__(
        self,
        results: ResultsStore,
        collection: str,
        settings: dict[str, Any],
        *,
        call_timeout: float = 30.0,
        reconnects: int = 3,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.results = results
        self.collection = collection
        self.settings = settings
        self.call_timeout = call_timeout
        self.reconnects = reconnects
        self.on_event = on_event or (lambda device, message: None)

    def run(
        self, devices: list[Device], artifacts: list[tuple[Path, dict[str, Any]]], workers: int | None = None
    ) -> list[DeviceOutcome]:
        self.results.record_collection(self.collection, self.settings)
        for folder, manifest in artifacts:
            self.results.record_artifact(manifest, folder.name)
        with ThreadPoolExecutor(max_workers=workers or max(1, len(devices)), thread_name_prefix="edge-fleet") as pool:
            return list(pool.map(lambda d: self._device(d, artifacts), devices))

    def _device(self, device: Device, artifacts: list[tuple[Path, dict[str, Any]]]) -> DeviceOutcome:
        outcome = DeviceOutcome(device.name)
        started = time.monotonic()
        targets = []
        for folder, manifest in artifacts:
            inputs, reference = folders_of(folder) or (None, None)  # device-side evaluation, when the export wrote the sets
            targets.append(Target(folder.name, folder, manifest["format"], eval_set=inputs, eval_reference=reference))
        planner = AttemptPlanner(lambda sha: f"{self.collection}-{sha[:16]}-{settings_digest(self.settings)}")
        try:
            with AgentClient(device.address, credentials_for(device), timeout=self.call_timeout) as client:
                hooks = _CollectHooks(self, device, outcome)
                session = DeviceSession(client, self.settings, planner=planner, reconnects=self.reconnects, hooks=hooks)
                result = session.run_all(targets)
            if result.device_error:
                exc = result.device_error
                outcome.error = f"{exc.code}: {str(exc.details).rsplit(': ', 1)[-1][:100]}"
        except (OSError, ValueError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        if not outcome.reachable:
            self.results.record_device(device.name, device.address, list(device.tags), None)
        outcome.seconds = time.monotonic() - started
        self.on_event(device.name, "done" if not outcome.error else f"failed: {outcome.error}")
        return outcome


class _CollectHooks(SessionHooks):
    """One device's session as the collector sees it: the device and every run recorded in the results store, the
    outcome counted, events for the live view."""

    def __init__(self, collector: Collector, device: Device, outcome: DeviceOutcome) -> None:
        self.collector = collector
        self.fleet_device = device
        self.outcome = outcome
        self.info: dict[str, Any] | None = None
        self.benchmarking: set[int] = set()

    def _event(self, message: str) -> None:
        self.collector.on_event(self.fleet_device.name, message)

    def device(self, info: dict[str, Any]) -> None:
        self.info = info
        self.outcome.reachable = True
        d = self.fleet_device
        self.collector.results.record_device(d.name, d.address, list(d.tags), info)
        self._event(f"reachable: {info.get('arch')} {info.get('cpu_model')}")

    def pushed(self, target: Target, entry: dict[str, Any], push: PushOutcome) -> None:
        self.outcome.pushed_bytes += push.bytes_sent

    def event(self, target: Target, event: dict[str, Any]) -> None:
        if id(target) not in self.benchmarking:
            self.benchmarking.add(id(target))
            self._event(f"benchmarking {target.label}")

    def finished(self, target: Target, entry: dict[str, Any]) -> None:
        outcome, state = self.outcome, entry.get("state")
        if "skipped" in entry:
            outcome.skipped[target.label] = entry["skipped"]
            self._event(f"skipped {target.label}: {entry['skipped']}")
        elif state == "REFUSED":
            outcome.failed += 1
            error = entry["error"]
            outcome.runs.append({"artifact": target.label, "run_id": None, "state": "REFUSED", "error": error})
            self._event(f"{target.label} refused: {error['code']}: {error['message']}")
        elif state not in ("UNREACHABLE", "NOT_RUN"):
            run = {k: v for k, v in entry.items() if k not in ("artifact", "reused")}
            c = self.collector
            c.results.record_run(c.collection, self.fleet_device.name, run, c.settings, self.info)
            if entry.get("reused"):
                outcome.reused += 1
            elif state == "RUN_STATE_SUCCEEDED":
                outcome.succeeded += 1
            else:
                outcome.failed += 1
            outcome.runs.append({"artifact": target.label, "run_id": run.get("run_id"), "state": state})
