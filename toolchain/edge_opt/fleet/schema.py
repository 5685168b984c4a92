"""The results store's tables as SQLAlchemy models (the schema's history is in ``migrations/versions``).

    collections  one per ``edge-fleet bench --collection NAME``: when, settings
    artifacts    sha256 → name, model, precision, format, size, the manifest
    devices      name → address, tags, the newest device-info snapshot
    runs         one per (device, run_id): collection, artifact, settings, state, every statistic, the raw
                 latency samples, the device-info snapshot of that run, the error if any

Only :mod:`edge_opt.fleet.store` (the SQL implementation of the results store) and the migrations use them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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
