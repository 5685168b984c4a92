"""Initial schema: collections, artifacts, devices, runs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
    )
    op.create_table(
        "artifacts",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("precision", sa.String(8), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("host_accuracy", sa.Float(), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("address", sa.String(200), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("collection", sa.String(128), sa.ForeignKey("collections.name"), nullable=False, index=True),
        sa.Column("device", sa.String(64), sa.ForeignKey("devices.name"), nullable=False, index=True),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("artifacts.sha256"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=True),
        sa.Column("p90_ms", sa.Float(), nullable=True),
        sa.Column("p99_ms", sa.Float(), nullable=True),
        sa.Column("mean_ms", sa.Float(), nullable=True),
        sa.Column("std_ms", sa.Float(), nullable=True),
        sa.Column("throughput_per_s", sa.Float(), nullable=True),
        sa.Column("peak_rss_bytes", sa.BigInteger(), nullable=True),
        sa.Column("disturbed", sa.Boolean(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("samples_ms", sa.JSON(), nullable=True),
        sa.Column("device_info", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(40), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("device", "run_id", name="uq_runs_device_run"),
    )


def downgrade() -> None:
    for table in ("runs", "devices", "artifacts", "collections"):
        op.drop_table(table)
