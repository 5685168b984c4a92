"""The device's results journal: append-only, self-checking JSON lines, fsynced before anything is streamed.

Each line is one entry ``{"seq": n, "run_id": ..., "event": "accepted" | "started" | "finished", "ts": ...,
..., "sum": <sha256 of the rest, 16 hex>}`` with a monotonic ``seq``. A run's record is the fold of its entries.

Why a line log and not SQLite: a record here is written once and never updated, and the failure that matters on
an SD card is a damaged sector or a torn write. With one self-checking record per line, damage costs exactly the
records it touches: recovery reads every line, keeps every record whose checksum and schema hold (before and
after the damage), and sets the bad ones aside. A damaged SQLite page can make the whole database unreadable,
and Python's ``sqlite3`` has no recovery API to get the other rows back.

Promises:

* every accepted run ends with exactly one ``finished`` entry (SUCCEEDED, FAILED, TIMED_OUT or INTERRUPTED),
  written and fsynced before the outcome is streamed;
* on open, every valid entry is kept wherever it is in the file; unreadable, torn, mis-checksummed or
  malformed lines (``{}`` included) are moved to ``journal.jsonl.rejected`` beside the journal and reported in
  :attr:`Journal.problems`; start-up never fails because of the journal's content;
* an append that fails (disk full, I/O error) is rolled back (the file is truncated to its last good byte), so a
  failed write never leaves a torn line for later entries to follow; the caller gets :class:`JournalUnavailable`
  and decides what to do (the run manager goes degraded and retries);
* runs that were accepted or started but never finished (the agent died) are closed as INTERRUPTED on open:
  never lost, never silently re-run;
* bounded: the journal keeps the newest ``keep_runs`` finished runs (and every unfinished one). When a quarter
  more have finished, it is compacted: rewritten atomically as one ``record`` entry per kept run (its whole
  record, with its own ``seq``), the older runs dropped. In memory a run's latency samples are packed doubles.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from edge_agent.contract.files import fsync_dir
from edge_agent.runs.journal_entries import (
    MAX_SEQ,
    TERMINAL_STATES,
    decode_entry,
    decode_samples,
    encode_entry,
    encode_samples,
    now_iso,
    with_samples,
)

_LOGGER = logging.getLogger(__name__)

#: Finished runs a journal keeps by default (the agent's --keep-runs).
DEFAULT_KEEP_RUNS: Final = 200


class JournalUnavailable(OSError):
    """An entry could not be made durable (disk full, I/O error); the journal is unchanged."""


def _open_private(path: Path, flags: int) -> Any:
    """Open for writing without following a symlink planted at ``path`` (0600 when created)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | flags, 0o600)
    return os.fdopen(fd, "ab" if flags & os.O_APPEND else "wb")



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

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Journal:
    """Thread-safe; one instance per store (the store's lock keeps other agents out)."""

    def __init__(self, path: Path, keep_runs: int = DEFAULT_KEEP_RUNS) -> None:
        if keep_runs < 1:
            raise ValueError(f"keep_runs must be at least 1, got {keep_runs}")
        self.keep_runs = keep_runs
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.records: dict[str, RunRecord] = {}
        self.seq = 0
        #: What recovery found at open: one line per set-aside entry (reported in device info and the log).
        self.problems: list[str] = []
        self._load()
        self._fd = self._open_append()
        self._compact_if_due()

    def _open_append(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)

    # ----- recovery ------------------------------------------------------------------------------------------
    def _load(self) -> None:
        """Read the journal a line at a time (never the whole file at once: it may hold a few hundred runs with
        20,000 samples each), keeping where each good line is in case the file must be rewritten without the bad."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as fh:
            legacy = not any(b'"sum":' in line for line in fh)  # written before records carried checksums
            fh.seek(0)
            good: list[tuple[int, int]] = []  # (offset, length) of each good line
            bad: list[bytes] = []
            seen: set[int] = set()
            offset = 0
            for number, line in enumerate(fh, start=1):
                at, offset = offset, offset + len(line)
                try:
                    entry = decode_entry(line, require_sum=not legacy)
                    if entry["seq"] in seen:
                        raise ValueError(f"duplicate seq {entry['seq']}")
                except ValueError as exc:
                    if line.strip():
                        self.problems.append(f"journal line {number}: {exc}; set aside in {self.path.name}.rejected")
                        bad.append(line if line.endswith(b"\n") else line + b"\n")
                    continue
                seen.add(entry["seq"])
                self._apply(entry)
                good.append((at, len(line)))
            if bad:
                for problem in self.problems:
                    _LOGGER.warning("%s", problem)
                self._rewrite(fh, good, bad)

    def _rewrite(self, source: Any, good: list[tuple[int, int]], bad: list[bytes]) -> None:
        """Keep the bad lines aside, then replace the journal with the good ones (copied from ``source``, the open
        journal, by offset), atomically."""
        try:
            with _open_private(self.path.parent / f"{self.path.name}.rejected", os.O_APPEND) as fh:
                fh.writelines(bad)
                fh.flush()
                os.fsync(fh.fileno())
            tmp = self.path.with_suffix(".recovering")
            tmp.unlink(missing_ok=True)  # never write through whatever was left there
            with _open_private(tmp, os.O_EXCL) as fh:
                for at, length in good:
                    source.seek(at)
                    fh.write(source.read(length))
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            # The journal stays as it was; every valid record is already in memory and appends still work.
            self.problems.append(f"could not rewrite the journal without its bad lines: {exc.strerror}")

    def _apply(self, entry: dict[str, Any]) -> None:
        self.seq = max(self.seq, int(entry["seq"]))
        run_id = entry["run_id"]
        event = entry["event"]
        if event == "record":
            self.records[run_id] = RunRecord(
                run_id,
                entry["sha256"],
                entry["settings"],
                entry["state"],
                entry["accepted_at"],
                entry["finished_at"],
                with_samples(entry.get("result"), decode_samples),
                entry.get("error"),
                seq=entry["seq"],
            )
            return
        if event == "accepted":
            if run_id not in self.records:
                self.records[run_id] = RunRecord(
                    run_id, entry["sha256"], entry.get("settings") or {}, "QUEUED", entry["ts"], seq=entry["seq"]
                )
            return
        record = self.records.get(run_id)
        if record is None or record.terminal:
            return
        # A new record object, never a change in place: readers on other threads hold whole, consistent records.
        if event == "started":
            self.records[run_id] = replace(record, seq=entry["seq"], state="RUNNING")
        elif event == "finished":
            self.records[run_id] = replace(
                record,
                seq=entry["seq"],
                state=entry["state"],
                finished_at=entry["ts"],
                result=with_samples(entry.get("result"), decode_samples),
                error=entry.get("error"),
            )

    # ----- writing -------------------------------------------------------------------------------------------
    def append(self, run_id: str, event: str, **fields: Any) -> dict[str, Any]:
        """Write one entry durably (fsync) and apply it; returns the entry.

        Raises:
            JournalUnavailable: the entry could not be made durable; nothing was applied or left in the file.
        """
        if "result" in fields:
            fields = {**fields, "result": with_samples(fields["result"], encode_samples)}
        with self._lock:
            if self.seq + 1 >= MAX_SEQ:  # only a damaged or planted line gets here: never write what a start refuses
                used_up = f"the journal's sequence numbers are used up (seq {self.seq}): move {self.path} aside and restart"
                raise JournalUnavailable(errno.ERANGE, used_up)
            entry = {"seq": self.seq + 1, "run_id": run_id, "event": event, "ts": now_iso(), **fields}
            line = encode_entry(entry)
            size = os.fstat(self._fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except OSError as exc:
                self._roll_back(size)
                raise JournalUnavailable(exc.errno, f"the results journal cannot be written: {exc.strerror}") from None
            self._apply(entry)
            if event == "finished":
                self._compact_if_due()
            return entry

    # ----- compaction ----------------------------------------------------------------------------------------
    def _compact_if_due(self) -> None:
        """Called with the lock held (or at open): compact once a quarter more than ``keep_runs`` have finished."""
        finished = sum(r.terminal for r in self.records.values())
        if finished > self.keep_runs + max(8, self.keep_runs // 4):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the journal as one ``record`` entry per kept run (the newest ``keep_runs`` finished ones and every
        unfinished one), atomically; on failure the journal stays as it was (and complete)."""
        finished = sorted((r for r in self.records.values() if r.terminal), key=lambda r: r.seq)
        dropped = {r.run_id for r in finished[: len(finished) - self.keep_runs]}
        kept = sorted((r for r in self.records.values() if r.run_id not in dropped), key=lambda r: r.seq)
        tmp = self.path.with_suffix(".compacting")
        try:
            tmp.unlink(missing_ok=True)
            with _open_private(tmp, os.O_EXCL) as fh:
                for record in kept:
                    fh.write(encode_entry(self._snapshot(record)))
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            _LOGGER.warning("could not compact the results journal (%s); it keeps growing until it can", exc.strerror)
            return
        # The compacted file is the journal now: appends go to it whatever happens next.
        os.close(self._fd)
        self._fd = self._open_append()
        try:
            fsync_dir(self.path.parent)
        except OSError as exc:
            _LOGGER.warning("could not flush the journal's folder after compacting it (%s)", exc.strerror)
        for run_id in dropped:
            del self.records[run_id]
        _LOGGER.info("results journal compacted: %d runs kept, the %d oldest finished ones dropped", len(kept), len(dropped))

    @staticmethod
    def _snapshot(record: RunRecord) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": record.seq,
            "run_id": record.run_id,
            "event": "record",
            "ts": record.finished_at or record.accepted_at,
            "sha256": record.sha256,
            "settings": record.settings,
            "state": record.state,
            "accepted_at": record.accepted_at,
            "finished_at": record.finished_at,
        }
        if record.result is not None:
            entry["result"] = with_samples(record.result, encode_samples)
        if record.error is not None:
            entry["error"] = record.error
        return entry

    def _roll_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError:
            _LOGGER.exception("could not roll back a failed journal write; the next open will set the torn line aside")

    def writable(self) -> bool:
        """Whether an entry could be written now (a probe write beside the journal, removed again)."""
        probe = self.path.parent / ".journal-probe"
        try:
            probe.unlink(missing_ok=True)
            with _open_private(probe, os.O_EXCL) as fh:
                fh.write(b"\0" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
            return True
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)

    # ----- queries -------------------------------------------------------------------------------------------
    def unfinished(self) -> list[RunRecord]:
        with self._lock:
            return [r for r in self.records.values() if not r.terminal]

    def close_interrupted(self, reason: str) -> list[str]:
        """Finish every run that has no terminal entry as INTERRUPTED (at start, after a crash).

        Raises:
            JournalUnavailable: from :meth:`append`; the runs left are still unfinished.
        """
        closed = []
        for record in sorted(self.unfinished(), key=lambda r: r.seq):
            self.append(record.run_id, "finished", state="INTERRUPTED", error={"code": "INTERRUPTED", "message": reason})
            closed.append(record.run_id)
        return closed

    def get(self, run_id: str) -> RunRecord | None:
        return self.records.get(run_id)

    def after(self, seq: int, limit: int) -> list[RunRecord]:
        with self._lock:
            records = list(self.records.values())
        return sorted((r for r in records if r.seq > seq), key=lambda r: r.seq)[:limit]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
