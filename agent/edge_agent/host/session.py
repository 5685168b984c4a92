"""One device session: the push → skip-if-present → bench → triage loop every host caller goes through.

A :class:`DeviceSession` works through a list of :class:`Target` s on one device and gives each its entry:

1. it asks the device what it is (``GetDeviceInfo``; optionally after waiting for its health check): a device
   that cannot answer ends the session there, every target named ``NOT_RUN`` with the reason;
2. a target whose runtime the device lacks is not pushed: its entry says why (``skipped``), which is not a failure;
3. the artifact is pushed (only the bytes the device lacks: one round trip when it has them), then its evaluation
   sets, then, unless the session only pushes, it is benchmarked: under the run id the target names, or the one a
   :class:`RunPlanner` chooses (which may instead hand back a finished run of the device's journal to reuse);
4. triage: a refusal that concerns one target (its push or its run) is that target's ``REFUSED`` entry and the
   session goes on with the next; a failure of the device as a whole (unreachable, credentials, deadline) is that
   target's ``UNREACHABLE`` entry, the session stops and names the rest ``NOT_RUN``. The entries gathered so far
   are always returned, with the device-wide failure, for the caller to report or raise.

An entry is a plain dict, as ``edge-agent bench --json`` prints it: ``{"artifact": label, **target.fields,
"sha256": ..., **the run's terminal event}``, or ``{"artifact": ..., "skipped": reason}``, or ``{..., "state":
"REFUSED" | "UNREACHABLE" | "NOT_RUN", "error": {"code", "message"}}``. :class:`SessionHooks` lets a caller show
progress and add its own fields as the session goes (a result file, a table row, a database record).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_agent.contract.formats import EVALSET_FORMAT, missing_runtime
from edge_agent.contract.manifest import read_artifact
from edge_agent.host.client import DeviceCallError, PushOutcome

#: How many attempts of one run id base :class:`AttemptPlanner` looks for in the device's journal.
MAX_ATTEMPTS = 20


class DeviceClient(Protocol):
    """What a session needs of :class:`edge_agent.host.client.AgentClient` (a test may give a fake)."""

    address: str

    def wait_ready(self, timeout: float = ...) -> None: ...

    def info(self) -> dict[str, Any]: ...

    def push(self, folder: Path, on_progress: Callable[[int, int], None] | None = ...) -> PushOutcome: ...

    def get_run(self, run_id: str) -> dict[str, Any]: ...

    def bench(
        self,
        sha256: str,
        settings: dict[str, Any] | None = ...,
        *,
        run_id: str | None = ...,
        reconnects: int = ...,
        eval_set_sha256: str = ...,
        eval_reference_sha256: str = ...,
    ) -> Iterator[dict[str, Any]]: ...


@dataclass
class Target:
    """One artifact a session pushes and runs."""

    #: The entry's ``artifact`` (what the caller calls it: the path the user gave, the folder's name).
    label: str
    folder: Path
    #: The artifact's format (its manifest's ``format``): checked against the device's runtimes.
    format: str
    #: The run's benchmark settings (None: the session's).
    settings: dict[str, Any] | None = None
    #: Evaluation-set folders (``edge_opt.evalset.publish``'s) pushed with the artifact and named to the run.
    eval_set: Path | None = None
    eval_reference: Path | None = None
    #: The run id (an idempotency key); None: a fresh one, or the session's planner's.
    run_id: str | None = None
    #: The caller's own fields, first in the entry after ``artifact`` (e.g. the host's accuracy).
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pushed:
    """A target on the device: its sha256, how the push went, and its evaluation sets' sha256s (for ``bench``)."""

    sha256: str
    push: PushOutcome
    eval_shas: dict[str, str]


@dataclass(frozen=True)
class RunPlan:
    """The run id a target's benchmark runs under, or a finished run of the device's journal that stands for it."""

    run_id: str | None
    reuse: dict[str, Any] | None = None


class RunPlanner(Protocol):
    def __call__(self, client: DeviceClient, target: Target, sha256: str) -> RunPlan: ...


class SessionHooks:
    """What a caller sees as a session goes; every method does nothing unless overridden."""

    def device(self, info: dict[str, Any]) -> None:
        """The device answered: its ``GetDeviceInfo``."""

    def pushed(self, target: Target, entry: dict[str, Any], push: PushOutcome) -> None:
        """The artifact is on the device (``entry`` has its sha256; the hook may add fields)."""

    def event(self, target: Target, event: dict[str, Any]) -> None:
        """One event of the run's stream (queue position, progress; the last is terminal)."""

    def benched(self, target: Target, entry: dict[str, Any]) -> None:
        """The run ended (``entry`` holds its terminal event) or a finished run was reused; not called on a refusal."""

    def finished(self, target: Target, entry: dict[str, Any]) -> None:
        """The target's entry is complete, whatever happened to it (skipped, refused, not run, benchmarked); not
        called when the device could not be asked what it is (every entry is NOT_RUN, the result says why)."""


@dataclass
class SessionResult:
    #: The device's ``GetDeviceInfo`` (None: it could not be asked).
    device: dict[str, Any] | None
    #: One entry per target, in the order given.
    entries: list[dict[str, Any]]
    #: The failure of the device as a whole that ended the session early, if any.
    device_error: DeviceCallError | None = None


def eval_set_shas(client: DeviceClient, eval_set: Path | None, eval_reference: Path | None) -> dict[str, str]:
    """Push a run's evaluation-set folders (only what the device lacks); their sha256s as ``bench`` names them.

    Raises:
        DeviceCallError: the device refused a push, or cannot be reached.
        ValueError: a folder that is not an evaluation set (or a reference without its set).
    """
    shas: dict[str, str] = {}
    if eval_reference is not None and eval_set is None:
        raise ValueError(f"{eval_reference}: reference outputs need the evaluation set they were computed on")
    for key, folder in (("eval_set_sha256", eval_set), ("eval_reference_sha256", eval_reference)):
        if folder is None:
            continue
        if read_artifact(folder).manifest["format"] != EVALSET_FORMAT:
            raise ValueError(f"{folder}: not an evaluation set (its manifest's format is not {EVALSET_FORMAT!r})")
        shas[key] = client.push(folder).sha256
    return shas


def run_benchmark(
    client: DeviceClient,
    sha256: str,
    settings: dict[str, Any],
    *,
    eval_shas: dict[str, str] | None = None,
    run_id: str | None = None,
    reconnects: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One benchmark of an artifact already on the device: its terminal event, or, when the device refused this run
    alone, ``{"state": "REFUSED", "error": {"code", "message"}}``.

    Raises:
        DeviceCallError: a failure of the device as a whole (``device_wide``).
    """
    options: dict[str, Any] = {"run_id": run_id, **(eval_shas or {})}
    if reconnects is not None:
        options["reconnects"] = reconnects
    last: dict[str, Any] = {}
    try:
        for event in client.bench(sha256, settings, **options):
            last = event
            if on_event is not None:
                on_event(event)
    except DeviceCallError as exc:
        if exc.device_wide:
            raise
        return {"state": "REFUSED", "error": {"code": exc.code, "message": exc.details}}
    return last


def bench_artifact(
    client: DeviceClient,
    sha256: str,
    settings: dict[str, Any],
    *,
    eval_set: Path | None = None,
    eval_reference: Path | None = None,
    run_id: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Benchmark an artifact already on the device, optionally evaluating it there on an evaluation set: the
    folders ``edge_opt.evalset.publish`` writes (``evalset.npz`` + ``manifest.json``), inputs and labels in
    ``eval_set``, the host's outputs in ``eval_reference``. They are pushed like artifacts (only what the device
    lacks) and named to the run; its result then has an ``evaluation``. Returns the run's terminal event.

    Raises:
        DeviceCallError: the device refused a push or the run, or cannot be reached.
        ValueError: an evaluation-set folder that is not one (or a reference without its set).
    """
    shas = eval_set_shas(client, eval_set, eval_reference)
    last: dict[str, Any] = {}
    inputs, reference = shas.get("eval_set_sha256", ""), shas.get("eval_reference_sha256", "")
    for event in client.bench(sha256, settings, run_id=run_id, eval_set_sha256=inputs, eval_reference_sha256=reference):
        last = event
        if on_event is not None:
            on_event(event)
    return last


class AttemptPlanner:
    """Deterministic run ids ``<base>-a<attempt>`` (``base`` from the artifact's sha256), so that the same work asked
    again finds what the device already did in its journal: the latest attempt SUCCEEDED → reused, not re-run; still
    QUEUED or RUNNING → re-attached; FAILED, TIMED_OUT or INTERRUPTED → a new attempt."""

    def __init__(self, base: Callable[[str], str], max_attempts: int = MAX_ATTEMPTS) -> None:
        self.base = base
        self.max_attempts = max_attempts

    def __call__(self, client: DeviceClient, target: Target, sha256: str) -> RunPlan:
        base = self.base(sha256)
        attempt, previous = self.latest_attempt(client, base)
        if previous is not None and previous.get("state") == "RUN_STATE_SUCCEEDED":
            return RunPlan(previous.get("run_id") or f"{base}-a{attempt}", reuse=previous)
        if previous is None or previous.get("state") not in ("RUN_STATE_QUEUED", "RUN_STATE_RUNNING"):
            attempt += 1  # nothing yet, or the last attempt ended badly: a fresh attempt
        return RunPlan(f"{base}-a{attempt}")

    def latest_attempt(self, client: DeviceClient, base: str) -> tuple[int, dict[str, Any] | None]:
        """The highest attempt number the device's journal knows for ``base``, and that run (or 0, None).

        Raises:
            DeviceCallError: FAILED_PRECONDITION when every attempt is used up; the device's own failures.
        """
        latest: tuple[int, dict[str, Any] | None] = (0, None)
        for attempt in range(1, self.max_attempts + 1):
            try:
                run = client.get_run(f"{base}-a{attempt}")
            except DeviceCallError as exc:
                if exc.code == "NOT_FOUND":
                    return latest
                raise
            latest = (attempt, run)
        raise DeviceCallError(
            client.address, "FAILED_PRECONDITION", f"{self.max_attempts} attempts of {base} failed; investigate the device"
        )


class DeviceSession:
    """Push and run :class:`Target` s on the device behind ``client`` (see the module's docstring).

    ``bench=False`` pushes only (artifacts and evaluation sets); ``wait_ready`` waits that many seconds for the
    device's health check before asking what it is; ``planner`` chooses run ids (and reuse); ``reconnects`` is
    the client's re-attach budget for a dropped stream (None: the client's default).
    """

    def __init__(
        self,
        client: DeviceClient,
        settings: dict[str, Any] | None = None,
        *,
        bench: bool = True,
        hooks: SessionHooks | None = None,
        planner: RunPlanner | None = None,
        reconnects: int | None = None,
        wait_ready: float | None = None,
    ) -> None:
        self.client = client
        self.settings = settings or {}
        self.bench = bench
        self.hooks = hooks or SessionHooks()
        self.planner = planner
        self.reconnects = reconnects
        self.wait_ready = wait_ready
        self.info: dict[str, Any] | None = None
        self.runtimes: list[str] = []

    def open(self) -> dict[str, Any]:
        """Ask the device what it is (after its health check, with ``wait_ready``); the runtimes it has are kept.

        Raises:
            DeviceCallError: the device cannot be reached or refuses us.
        """
        if self.wait_ready is not None:
            self.client.wait_ready(timeout=self.wait_ready)
        info = self.client.info()
        self.info = info
        self.runtimes = [str(r.get("name", "")) for r in info.get("runtimes", [])]
        self.hooks.device(info)
        return info

    def missing_runtime(self, target: Target) -> str | None:
        """Why the device cannot run ``target`` (None: it can). Call :meth:`open` first."""
        return missing_runtime(target.format, self.runtimes)

    def push(self, target: Target, entry: dict[str, Any] | None = None) -> Pushed:
        """Push the artifact (only what the device lacks), then its evaluation sets.

        Raises:
            DeviceCallError: the device refused a push (``device_wide`` False) or failed as a whole.
            ValueError: an evaluation-set folder that is not one.
        """
        push = self.client.push(target.folder)
        if entry is not None:
            entry["sha256"] = push.sha256
            self.hooks.pushed(target, entry, push)
        return Pushed(push.sha256, push, eval_set_shas(self.client, target.eval_set, target.eval_reference))

    def run(self, target: Target, pushed: Pushed) -> dict[str, Any]:
        """Benchmark a pushed target: its terminal event (``REFUSED`` with the device's error when it refused the
        run), or the reused run its planner found (with ``"reused": True``).

        Raises:
            DeviceCallError: a failure of the device as a whole.
        """
        plan = self.planner(self.client, target, pushed.sha256) if self.planner else RunPlan(target.run_id)
        if plan.reuse is not None:
            return {**plan.reuse, "reused": True}
        return run_benchmark(
            self.client,
            pushed.sha256,
            self.settings if target.settings is None else target.settings,
            eval_shas=pushed.eval_shas,
            run_id=plan.run_id,
            reconnects=self.reconnects,
            on_event=lambda event: self.hooks.event(target, event),
        )

    def run_all(self, targets: Sequence[Target]) -> SessionResult:
        """Every target pushed and (unless ``bench=False``) run, each with its entry; never raises a device's
        failure: a device-wide one ends the session and is returned with the entries gathered."""
        try:
            info = self.open()
        except DeviceCallError as exc:
            not_run = {"code": exc.code, "message": f"not run: {exc}"}
            entries = [{"artifact": t.label, **t.fields, "state": "NOT_RUN", "error": not_run} for t in targets]
            return SessionResult(None, entries, exc)
        result = SessionResult(info, [])
        for target in targets:
            entry, failure = self._entry(target, result.device_error)
            result.device_error = result.device_error or failure
            result.entries.append(entry)
            self.hooks.finished(target, entry)
        return result

    def _entry(self, target: Target, stopped: DeviceCallError | None) -> tuple[dict[str, Any], DeviceCallError | None]:
        """The target's entry, and the device-wide failure its push or run met (None: the device still answers)."""
        entry: dict[str, Any] = {"artifact": target.label, **target.fields}
        if stopped is not None:
            earlier = {"code": stopped.code, "message": f"not run: the device failed earlier: {stopped}"}
            entry.update(state="NOT_RUN", error=earlier)
        elif reason := self.missing_runtime(target):
            entry["skipped"] = reason
        else:
            try:
                pushed = self.push(target, entry)
                if self.bench:
                    entry.update(self.run(target, pushed))
                    if entry.get("state") != "REFUSED":
                        self.hooks.benched(target, entry)
            except DeviceCallError as exc:
                state = "UNREACHABLE" if exc.device_wide else "REFUSED"
                entry.update(state=state, error={"code": exc.code, "message": exc.details})
                return entry, exc if exc.device_wide else None
        return entry, None
