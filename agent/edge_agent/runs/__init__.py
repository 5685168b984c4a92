"""The daemon's runs: the queue (one benchmark at a time), the results journal, recovery when the journal
cannot be written, supervision of the worker subprocess, and the analysis of what disturbed a run."""

from __future__ import annotations
