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

from edge_agent.contract.formats import missing_runtime
from edge_agent.host.client import AgentClient, Credentials, DeviceCallError

from edge_opt.errors import ConfigError
from edge_opt.evalset import push_eval_sets
from edge_opt.export.artifact import read_manifest
from edge_opt.fleet.inventory import Device
from edge_opt.fleet.results import ResultsStore

MAX_ATTEMPTS = 20


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
        try:
            with AgentClient(device.address, credentials_for(device), timeout=self.call_timeout) as client:
                info = client.info()
                outcome.reachable = True
                self.results.record_device(device.name, device.address, list(device.tags), info)
                self.on_event(device.name, f"reachable: {info.get('arch')} {info.get('cpu_model')}")
                runtimes = [r.get("name", "") for r in info.get("runtimes", [])]
                for folder, manifest in artifacts:
                    if reason := missing_runtime(manifest["format"], runtimes):
                        outcome.skipped[folder.name] = reason
                        self.on_event(device.name, f"skipped {folder.name}: {reason}")
                        continue
                    try:
                        self._artifact(client, device, folder, manifest, info, outcome)
                    except DeviceCallError as exc:
                        if exc.device_wide:
                            raise
                        outcome.failed += 1
                        error = {"code": exc.code, "message": exc.details}
                        outcome.runs.append({"artifact": folder.name, "run_id": None, "state": "REFUSED", "error": error})
                        self.on_event(device.name, f"{folder.name} refused: {exc.code}: {exc.details}")
        except DeviceCallError as exc:
            outcome.error = f"{exc.code}: {str(exc.details).rsplit(': ', 1)[-1][:100]}"
        except (OSError, ValueError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        if not outcome.reachable:
            self.results.record_device(device.name, device.address, list(device.tags), None)
        outcome.seconds = time.monotonic() - started
        self.on_event(device.name, "done" if not outcome.error else f"failed: {outcome.error}")
        return outcome

    def _artifact(
        self,
        client: AgentClient,
        device: Device,
        folder: Path,
        manifest: dict[str, Any],
        info: dict[str, Any],
        outcome: DeviceOutcome,
    ) -> None:
        sha = manifest["file"]["sha256"]
        pushed = client.push(folder)
        outcome.pushed_bytes += pushed.bytes_sent
        base = f"{self.collection}-{sha[:16]}-{settings_digest(self.settings)}"
        attempt, previous = self._latest_attempt(client, base)
        if previous is not None and previous["state"] == "RUN_STATE_SUCCEEDED":
            outcome.reused += 1
            final = previous
        else:
            if previous is None or previous["state"] not in ("RUN_STATE_QUEUED", "RUN_STATE_RUNNING"):
                attempt += 1  # nothing yet, or the last attempt ended badly: a fresh attempt
            run_id = f"{base}-a{attempt}"
            self.on_event(device.name, f"benchmarking {folder.name}")
            final = {}
            eval_shas = push_eval_sets(client, folder)  # device-side evaluation, when the export wrote the sets
            for event in client.bench(sha, self.settings, run_id=run_id, reconnects=self.reconnects, **eval_shas):
                final = event
            final = {**final, "sha256": sha, "run_id": run_id}
        final.setdefault("sha256", sha)
        self.results.record_run(self.collection, device.name, final, self.settings, info)
        if final.get("state") == "RUN_STATE_SUCCEEDED":
            outcome.succeeded += 1
        else:
            outcome.failed += 1
        outcome.runs.append({"artifact": folder.name, "run_id": final.get("run_id"), "state": final.get("state")})

    def _latest_attempt(self, client: AgentClient, base: str) -> tuple[int, dict[str, Any] | None]:
        """The highest attempt number the device's journal knows for ``base``, and that run (or 0, None)."""
        latest: tuple[int, dict[str, Any] | None] = (0, None)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                run = client.get_run(f"{base}-a{attempt}")
            except DeviceCallError as exc:
                if exc.code == "NOT_FOUND":
                    return latest
                raise
            latest = (attempt, run)
        raise DeviceCallError(
            client.address, "FAILED_PRECONDITION", f"{MAX_ATTEMPTS} attempts of {base} failed; investigate the device"
        )
