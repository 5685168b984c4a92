"""The sweeps behind ``edge-sweep`` (``runs``: exports over pruning amounts, calibration batch counts, per-layer
sensitivity) and what they write and print (``plots``: CSV, JSON and the plot; ``tables``: the terminal tables).
The entry point and its flags are :mod:`edge_opt.cli.sweep`."""

from __future__ import annotations
