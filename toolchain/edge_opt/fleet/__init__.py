"""Fleet-wide benchmark collection: an inventory of devices (``inventory``), concurrent collection (``collect``), the
results store (``results``: its interface; ``store`` + ``schema``: SQLite or PostgreSQL), reports, comparisons
and per-device winners (``report``, ``compare``, ``winners``, ``outliers``) and the ``edge-fleet`` command (``cli``)."""

from __future__ import annotations
