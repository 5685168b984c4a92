"""edge-agent: the device side of edge-opt. Never imports torch or edge_opt at import time."""

from __future__ import annotations

__version__ = "0.1.0"
