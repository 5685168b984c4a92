"""Alembic environment: runs migrations on the connection edge_opt.fleet.store.migrate hands over."""

from __future__ import annotations

from alembic import context
from edge_opt.fleet.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
