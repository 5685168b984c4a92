"""The evaluation sets a run names (sha256s of ``evalset`` artifacts in the store): checked when the run is
submitted, handed to the worker as file paths (:mod:`edge_agent.worker.evaluation` evaluates with them)."""

from __future__ import annotations

from typing import Any

from edge_agent.contract.errors import ArtifactNotFound, ArtifactRejected
from edge_agent.contract.formats import EVALSET_FILE, EVALSET_FORMAT
from edge_agent.store.catalogue import ArtifactStore


def resolve(store: ArtifactStore, sha256: str, member: str) -> str:
    """The committed evaluation set ``sha256`` in ``store`` (checked at submit time); '' when none was asked for.

    Raises:
        ArtifactNotFound: the device does not have it.
        ArtifactRejected: it is not an evaluation set.
    """
    if not sha256:
        return ""
    meta = store.get(sha256)
    if meta is None:
        raise ArtifactNotFound(f"evaluation set {sha256} is not on this device; push it first")
    if meta.format != EVALSET_FORMAT:
        raise ArtifactRejected(f"{member} {sha256} is an artifact of format {meta.format}, not an evaluation set")
    return sha256


def worker_paths(store: ArtifactStore, settings: dict[str, Any]) -> dict[str, str]:
    """The files the worker evaluates with, from a run's settings; a deleted set is reported by the worker."""
    paths = {}
    for key in ("eval_set_sha256", "eval_reference_sha256"):
        sha = settings.get(key) or ""
        if sha:
            paths[key.removesuffix("_sha256")] = str(store.artifacts_dir / sha / EVALSET_FILE)
    return paths
