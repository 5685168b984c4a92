"""The results store: SQLite by default, PostgreSQL by URL; SQLAlchemy for the database, Alembic for the schema.

Tables (schema in ``migrations/versions``; :func:`open_store` upgrades an existing database to the newest):

    collections  one per ``edge-fleet bench --collection NAME``: when, settings
    artifacts    sha256 → name, model, precision, format, size, the manifest
    devices      name → address, tags, the newest device-info snapshot
    runs         one per (device, run_id): collection, artifact, settings, state, every statistic, the raw
                 latency samples, the device-info snapshot of that run, the error if any

A run is recorded once: ``(device, run_id)`` is unique and writes are upserts, so a collection that is re-run
(or a device that is resumed) never records anything twice.
"""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from edge_opt.errors import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


class Base(DeclarativeBase):
    pass


class Collection(Base):
    __tablename__ = "collections"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(40))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)


class Artifact(Base):
    __tablename__ = "artifacts"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    precision: Mapped[str] = mapped_column(String(8))
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    host_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)


class Device(Base):
    __tablename__ = "devices"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[str] = mapped_column(String(40))


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("device", "run_id", name="uq_runs_device_run"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection: Mapped[str] = mapped_column(ForeignKey("collections.name"), index=True)
    device: Mapped[str] = mapped_column(ForeignKey("devices.name"), index=True)
    run_id: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"))
    state: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    p50_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    p90_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    p99_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    mean_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    std_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    throughput_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_rss_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disturbed: Mapped[bool | None] = mapped_column(nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    samples_ms: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    device_info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    recorded_at: Mapped[str] = mapped_column(String(40))


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


def open_store(value: str) -> Engine:
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
    return engine


def _insert(session: Session, table: type[Base]) -> Any:
    """An INSERT that can say ON CONFLICT: PostgreSQL's or SQLite's (both speak it), for ``table``."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql_insert(table)
    if dialect == "sqlite":
        return sqlite_insert(table)
    raise ConfigError(f"the results store supports SQLite and PostgreSQL, not {dialect}")


def record_collection(session: Session, name: str, settings: dict[str, Any]) -> None:
    """Create the collection once; a concurrent collector creating it too is not an error."""
    statement = _insert(session, Collection).values(name=name, created_at=now(), settings=settings)
    session.execute(statement.on_conflict_do_nothing(index_elements=[Collection.name]))


def record_artifact(session: Session, manifest: dict[str, Any], name: str) -> None:
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


def record_device(session: Session, name: str, address: str, tags: list[str], info: dict[str, Any] | None) -> None:
    """Upsert the device; a snapshot of ``None`` (unreachable) keeps the last known info."""
    info = json_safe(info)
    statement = _insert(session, Device).values(name=name, address=address, tags=tags, info=info, updated_at=now())
    update = {"address": statement.excluded.address, "tags": statement.excluded.tags, "updated_at": statement.excluded.updated_at}
    if info is not None:
        update["info"] = statement.excluded.info
    session.execute(statement.on_conflict_do_update(index_elements=[Device.name], set_=update))


def record_run(
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


def runs_of(session: Session, collection: str) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.collection == collection).order_by(Run.device, Run.sha256)))


def collections(session: Session) -> list[str]:
    return list(session.scalars(select(Collection.name).order_by(Collection.created_at)))
