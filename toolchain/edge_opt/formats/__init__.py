"""Artifact formats as plugins: one module per format (build the model file, load it back, its manifest and
evaluation facts) and the registry every caller derives from (``--format all``, the pick, the sweep, the manifest)."""

from __future__ import annotations
