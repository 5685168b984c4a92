"""The export job behind ``edge-export``: prepare the model and its data once, build every (precision, format)
with the format's plugin (:mod:`edge_opt.formats`), check it (parity gates, evaluation, host latency), and publish it
atomically with its manifest; then the summary table and JSON."""

from __future__ import annotations
