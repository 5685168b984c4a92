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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, select
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


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
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


def record_collection(session: Session, name: str, settings: dict[str, Any]) -> None:
    if session.get(Collection, name) is None:
        session.add(Collection(name=name, created_at=now(), settings=settings))


def record_artifact(session: Session, manifest: dict[str, Any], name: str) -> None:
    sha = manifest["file"]["sha256"]
    if session.get(Artifact, sha) is None:
        session.add(
            Artifact(
                sha256=sha,
                name=name,
                model=manifest.get("model", {}).get("name", ""),
                precision=manifest["precision"],
                format=manifest["format"],
                size_bytes=manifest["file"]["size_bytes"],
                host_accuracy=(manifest.get("host_metrics") or {}).get("accuracy"),
                manifest=manifest,
            )
        )


def record_device(session: Session, name: str, address: str, tags: list[str], info: dict[str, Any] | None) -> None:
    info = json_safe(info)
    device = session.get(Device, name)
    if device is None:
        session.add(Device(name=name, address=address, tags=tags, info=info, updated_at=now()))
    else:
        device.address, device.tags, device.updated_at = address, tags, now()
        if info is not None:
            device.info = info


def record_run(
    session: Session,
    collection: str,
    device: str,
    run: dict[str, Any],
    settings: dict[str, Any],
    device_info: dict[str, Any] | None,
) -> None:
    """Upsert one run by (device, run_id): a terminal state is never overwritten by a worse one."""
    run, device_info = json_safe(run), json_safe(device_info)
    existing = session.scalars(select(Run).where(Run.device == device, Run.run_id == run["run_id"])).first()
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
    if existing is None:
        session.add(Run(**values))
    elif existing.state != "SUCCEEDED":
        for key, value in values.items():
            setattr(existing, key, value)


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
