"""The benchmark worker: the only code that loads an untrusted model, in a subprocess per run
(``python -m edge_agent.worker.main``): confinement, the timed loop and the evaluation after it."""

from __future__ import annotations
