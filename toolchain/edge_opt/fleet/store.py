"""The results store in SQL (:class:`edge_opt.fleet.results.ResultsStore`): SQLite by default, PostgreSQL by URL;
SQLAlchemy for the database, Alembic for the schema (tables: :mod:`edge_opt.fleet.schema`; :func:`open_store`
upgrades an existing database to the newest revision).

A run is recorded once: ``(device, run_id)`` is unique and writes are upserts that the database decides
(``INSERT ... ON CONFLICT``, spoken by both SQLite and PostgreSQL: the only place the two dialects differ), so a
collection that is re-run, a device that is resumed or collectors on several hosts writing one PostgreSQL database
never record anything twice.
"""

from __future__ import annotations

import json
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from edge_opt.errors import ConfigError
from edge_opt.fleet.schema import Artifact, Base, Collection, Device, Run

MIGRATIONS = Path(__file__).with_name("migrations")


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON (and PostgreSQL's json type) has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def database_url(value: str) -> str:
    """A SQLAlchemy URL from ``--db``: a file path (SQLite) or a ``postgresql://`` / ``sqlite://`` URL."""
    if "://" in value:
        if value.startswith("postgresql://"):
            return "postgresql+psycopg://" + value[len("postgresql://") :]
        return value
    path = Path(value).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


#: Alembic's migration context is process-global: one migration at a time in this process.
_MIGRATING = threading.Lock()
#: PostgreSQL advisory-lock key held while migrating, so collectors on several hosts never migrate at once.
_MIGRATION_LOCK_KEY = 0x6564_6765_666C  # "edgefl"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database); safe to call concurrently."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _MIGRATING, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_store(value: str) -> SqlResultsStore:
    """Connect and migrate. Raises ConfigError with the fix when the database cannot be reached."""
    url = database_url(value)
    try:
        engine = create_engine(url, future=True, pool_pre_ping=True)
        migrate(engine)
    except Exception as exc:
        raise ConfigError(
            f"cannot open the results store {value!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "pass --db FILE.sqlite or --db postgresql://user@host/db"
        ) from None
    return SqlResultsStore(engine)


def _insert(session: Session, table: type[Base]) -> Any:
    """An INSERT that can say ON CONFLICT: PostgreSQL's or SQLite's (both speak it), for ``table``."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql_insert(table)
    if dialect == "sqlite":
        return sqlite_insert(table)
    raise ConfigError(f"the results store supports SQLite and PostgreSQL, not {dialect}")


def _record_collection(session: Session, name: str, settings: dict[str, Any]) -> None:
    """Create the collection once; a concurrent collector creating it too is not an error."""
    statement = _insert(session, Collection).values(name=name, created_at=now(), settings=settings)
    session.execute(statement.on_conflict_do_nothing(index_elements=[Collection.name]))


def _record_artifact(session: Session, manifest: dict[str, Any], name: str) -> None:
    values = {
        "sha256": manifest["file"]["sha256"],
        "name": name,
        "model": manifest.get("model", {}).get("name", ""),
        "precision": manifest["precision"],
        "format": manifest["format"],
        "size_bytes": manifest["file"]["size_bytes"],
        "host_accuracy": (manifest.get("host_metrics") or {}).get("accuracy"),
        "manifest": json_safe(manifest),
    }
    statement = _insert(session, Artifact).values(**values)
    session.execute(statement.on_conflict_do_nothing(index_elements=[Artifact.sha256]))


def _record_device(session: Session, name: str, address: str, tags: list[str], info: dict[str, Any] | None) -> None:
    """Upsert the device; a snapshot of ``None`` (unreachable) keeps the last known info."""
    info = json_safe(info)
    statement = _insert(session, Device).values(name=name, address=address, tags=tags, info=info, updated_at=now())
    update = {"address": statement.excluded.address, "tags": statement.excluded.tags, "updated_at": statement.excluded.updated_at}
    if info is not None:
        update["info"] = statement.excluded.info
    session.execute(statement.on_conflict_do_update(index_elements=[Device.name], set_=update))


def _record_run(
    session: Session,
    collection: str,
    device: str,
    run: dict[str, Any],
    settings: dict[str, Any],
    device_info: dict[str, Any] | None,
) -> None:
    """Upsert one run by (device, run_id) in one statement: a SUCCEEDED row is never overwritten.

    The database decides (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``), so collectors on several hosts writing
    one PostgreSQL database at the same time neither fail nor record a run twice.
    """
    run, device_info = json_safe(run), json_safe(device_info)
    result = run.get("result")
    error = run.get("error") or {}
    latency = (result or {}).get("latency", {})
    values = {
        "collection": collection,
        "device": device,
        "run_id": run["run_id"],
        "sha256": run["sha256"],
        "state": run["state"].removeprefix("RUN_STATE_"),
        "settings": settings,
        "p50_ms": latency.get("p50_ms"),
        "p90_ms": latency.get("p90_ms"),
        "p99_ms": latency.get("p99_ms"),
        "mean_ms": latency.get("mean_ms"),
        "std_ms": latency.get("std_ms"),
        "throughput_per_s": latency.get("throughput_per_s"),
        "peak_rss_bytes": (result or {}).get("peak_rss_bytes"),
        "disturbed": (result or {}).get("disturbed"),
        "result": _without_samples(result),
        "samples_ms": latency.get("samples_ms") or None,
        "device_info": device_info,
        "error_code": error.get("code"),
        "error_message": error.get("message"),
        "recorded_at": now(),
    }
    statement = _insert(session, Run).values(**values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Run.device, Run.run_id],
            set_={k: statement.excluded[k] for k in values if k not in ("device", "run_id")},
            where=Run.state != "SUCCEEDED",
        )
    )


def _without_samples(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if result is None:
        return None
    trimmed = json.loads(json.dumps(result))
    trimmed.get("latency", {}).pop("samples_ms", None)
    return trimmed


def _runs_of(session: Session, collection: str) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.collection == collection).order_by(Run.device, Run.sha256)))


def _collections(session: Session) -> list[str]:
    return list(session.scalars(select(Collection.name).order_by(Collection.created_at)))


class SqlResultsStore:
    """The results store in a SQLAlchemy engine's database; each call is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite takes one writer at a time: this process's threads queue here instead of failing on a locked file.
        self._write_lock = threading.Lock()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        if write:
            with self._write_lock, Session(self.engine) as session, session.begin():
                yield session
        else:
            with Session(self.engine) as session:
                yield session

    def _write(self, fn: Callable[[Session], None]) -> None:
        with self._session(write=True) as session:
            fn(session)

    def record_collection(self, name: str, settings: dict[str, Any]) -> None:
        self._write(lambda s: _record_collection(s, name, settings))

    def record_artifact(self, manifest: dict[str, Any], name: str) -> None:
        self._write(lambda s: _record_artifact(s, manifest, name))

    def record_device(self, name: str, address: str, tags: list[str], info: dict[str, Any] | None) -> None:
        self._write(lambda s: _record_device(s, name, address, tags, info))

    def record_run(
        self, collection: str, device: str, run: dict[str, Any], settings: dict[str, Any], device_info: dict[str, Any] | None
    ) -> None:
        self._write(lambda s: _record_run(s, collection, device, run, settings, device_info))

    def collections(self) -> list[str]:
        with self._session() as session:
            return _collections(session)

    def collection_rows(self, collection: str) -> list[dict[str, Any]]:
        """One row per device × artifact: the latest successful run, else the latest attempt.

        ``history_ms`` holds the medians of the device's other successful, undisturbed runs of the same artifact
        with the same threads and batch size, in any collection, oldest first (``history_disturbed``: how many
        disturbed ones were left out): what :mod:`edge_opt.device.round_stats` learns the device's run-to-run
        spread from.
        """
        with self._session() as session:
            artifacts = {a.sha256: a for a in session.scalars(select(Artifact))}
            best: dict[tuple[str, str], Run] = {}
            for run in _runs_of(session, collection):
                key = (run.device, run.sha256)
                current = best.get(key)
                if (
                    current is None
                    or (run.state == "SUCCEEDED") > (current.state == "SUCCEEDED")
                    or ((run.state == "SUCCEEDED") == (current.state == "SUCCEEDED") and run.id > current.id)
                ):
                    best[key] = run
            history = _history(session, list(best.values()))
            return [_row(run, artifacts.get(sha), history[run.id]) for (_device, sha), run in sorted(best.items())]


def _row(run: Run, artifact: Artifact | None, history: tuple[list[float], int]) -> dict[str, Any]:
    return {
        "device": run.device,
        "sha256": run.sha256,
        "artifact": artifact.name if artifact else run.sha256[:16],
        "model": artifact.model if artifact else "",
        "precision": artifact.precision if artifact else "",
        "format": artifact.format if artifact else "",
        "state": run.state,
        "p50_ms": run.p50_ms,
        "p90_ms": run.p90_ms,
        "p99_ms": run.p99_ms,
        "throughput_per_s": run.throughput_per_s,
        "host_accuracy": artifact.host_accuracy if artifact else None,
        "manifest": artifact.manifest if artifact else None,
        "result": run.result,
        "size_bytes": artifact.size_bytes if artifact else None,
        "peak_rss_mib": run.peak_rss_bytes / 2**20 if run.peak_rss_bytes else None,
        "disturbed": run.disturbed,
        "error": f"{run.error_code}: {run.error_message}" if run.error_code else "",
        "run_id": run.run_id,
        "samples_ms": run.samples_ms or [],
        "device_info": run.device_info,
        "history_ms": history[0],
        "history_disturbed": history[1],
    }


def _shape(settings: dict[str, Any] | None) -> tuple[Any, Any]:
    """The settings that change what a run measures: threads and batch size."""
    settings = settings or {}
    return settings.get("threads"), settings.get("batch_size")


def _history(session: Session, runs: list[Run]) -> dict[int, tuple[list[float], int]]:
    """Per run id: the medians of the other successful undisturbed runs like it (see collection_rows), and how
    many disturbed ones were left out."""
    if not runs:
        return {}
    keys = {(r.device, r.sha256, _shape(r.settings)) for r in runs}
    query = (
        select(Run.id, Run.device, Run.sha256, Run.settings, Run.p50_ms, Run.disturbed)
        .where(Run.state == "SUCCEEDED", Run.p50_ms.is_not(None), Run.device.in_({k[0] for k in keys}))
        .order_by(Run.id)
    )
    past: dict[tuple[str, str, tuple[Any, Any]], list[tuple[int, float, bool]]] = defaultdict(list)
    for run_id, device, sha, settings, p50, disturbed in session.execute(query):
        key = (device, sha, _shape(settings))
        if key in keys:
            past[key].append((run_id, p50, bool(disturbed)))
    out = {}
    for r in runs:
        others = [(p50, disturbed) for run_id, p50, disturbed in past[(r.device, r.sha256, _shape(r.settings))] if run_id != r.id]
        out[r.id] = ([p50 for p50, disturbed in others if not disturbed], sum(disturbed for _, disturbed in others))
    return out
