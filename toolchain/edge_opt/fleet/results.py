"""The results store's interface: what the fleet's collector records and its reports and comparisons read.

Every result a fleet produces goes through a :class:`ResultsStore`; nothing else in the fleet opens the database.
The one implementation, :class:`edge_opt.fleet.store.SqlResultsStore`, keeps it in SQLite or PostgreSQL.

Writes are idempotent (a collection, an artifact or a run recorded twice is recorded once) and safe from several
threads and several hosts at once; a run that SUCCEEDED is never overwritten by a later attempt.
"""

from __future__ import annotations

from typing import Any, Protocol


class ResultsStore(Protocol):
    """Where collections, artifacts, devices and runs are kept."""

    def record_collection(self, name: str, settings: dict[str, Any]) -> None:
        """Create the collection once (a concurrent collector creating it too is not an error)."""

    def record_artifact(self, manifest: dict[str, Any], name: str) -> None:
        """Record an artifact by its manifest (keyed by the model file's sha256)."""

    def record_device(self, name: str, address: str, tags: list[str], info: dict[str, Any] | None) -> None:
        """Upsert a device; ``info`` ``None`` (unreachable) keeps the last known device info."""

    def record_run(
        self, collection: str, device: str, run: dict[str, Any], settings: dict[str, Any], device_info: dict[str, Any] | None
    ) -> None:
        """Upsert one run by (device, run_id); a SUCCEEDED run is never overwritten."""

    def collections(self) -> list[str]:
        """Every collection's name, oldest first."""

    def collection_rows(self, collection: str) -> list[dict[str, Any]]:
        """One row per device × artifact of ``collection``: its latest successful run, else its latest attempt,
        with the artifact's fields and the device's history of the same artifact (see the implementation)."""
