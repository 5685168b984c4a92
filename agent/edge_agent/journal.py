"""The device's results journal: append-only JSON lines, fsynced before anything is streamed.

Each line is one entry ``{"seq": n, "run_id": ..., "event": "accepted" | "started" | "finished", ...}`` with a
monotonic ``seq``. A run's record is the fold of its entries. Promises:

* every accepted run ends with exactly one ``finished`` entry (state SUCCEEDED, FAILED, TIMED_OUT or
  INTERRUPTED), written and fsynced before the outcome is streamed;
* on open, a torn last line (the agent died mid-write) is truncated and every earlier entry is kept;
* runs that were accepted or started but never finished (the agent died) are closed as INTERRUPTED on open:
  never lost, never silently re-run.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "INTERRUPTED"})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class RunRecord:
    run_id: str
    sha256: str
    settings: dict[str, Any]
    state: str = "QUEUED"
    accepted_at: str = ""
    finished_at: str = ""
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.records: dict[str, RunRecord] = {}
        self.seq = 0
        self._load()
        self._fh = path.open("ab")

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn tail: the write never completed
            try:
                entry = json.loads(line)
            except ValueError:
                break
            self._apply(entry)
            good += len(line)
        if good != len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())

    def _apply(self, entry: dict[str, Any]) -> None:
        self.seq = max(self.seq, int(entry["seq"]))
        run_id = entry["run_id"]
        event = entry["event"]
        if event == "accepted":
            self.records[run_id] = RunRecord(
                run_id, entry["sha256"], entry.get("settings", {}), "QUEUED", entry["ts"], seq=entry["seq"]
            )
            return
        record = self.records.get(run_id)
        if record is None:
            return
        record.seq = entry["seq"]
        if event == "started":
            record.state = "RUNNING"
        elif event == "finished":
            record.state = entry["state"]
            record.finished_at = entry["ts"]
            record.result = entry.get("result")
            record.error = entry.get("error")

    def append(self, run_id: str, event: str, **fields: Any) -> dict[str, Any]:
        """Write one entry durably (fsync) and apply it; returns the entry."""
        with self._lock:
            entry = {"seq": self.seq + 1, "run_id": run_id, "event": event, "ts": now_iso(), **fields}
            self._fh.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._apply(entry)
            return entry

    def unfinished(self) -> list[RunRecord]:
        return [r for r in self.records.values() if not r.terminal]

    def close_interrupted(self, reason: str) -> list[str]:
        """Finish every run that has no terminal entry as INTERRUPTED (at start, after a crash)."""
        closed = []
        for record in sorted(self.unfinished(), key=lambda r: r.seq):
            self.append(record.run_id, "finished", state="INTERRUPTED", error={"code": "INTERRUPTED", "message": reason})
            closed.append(record.run_id)
        return closed

    def get(self, run_id: str) -> RunRecord | None:
        return self.records.get(run_id)

    def after(self, seq: int, limit: int) -> list[RunRecord]:
        return sorted((r for r in self.records.values() if r.seq > seq), key=lambda r: r.seq)[:limit]

    def close(self) -> None:
        self._fh.close()
