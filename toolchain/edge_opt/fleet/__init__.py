"""Fleet-wide benchmark collection: an inventory of devices, concurrent collection, a results store, reports."""

from __future__ import annotations
