from __future__ import annotations

from pathlib import Path

import pytest
from edge_agent.journal import Journal

pytestmark = pytest.mark.unit


def test_records_fold_and_seq_is_monotonic(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append("r1", "accepted", sha256="a" * 64, settings={"iterations": 5})
    journal.append("r1", "started")
    journal.append("r1", "finished", state="SUCCEEDED", result={"latency": {"p50_ms": 1.0}})
    record = journal.get("r1")
    assert record is not None and record.state == "SUCCEEDED" and record.result == {"latency": {"p50_ms": 1.0}}
    assert record.seq == 3 and journal.seq == 3


def test_torn_tail_is_truncated_and_earlier_entries_kept(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append("r1", "accepted", sha256="a" * 64, settings={})
    journal.append("r1", "finished", state="FAILED", error={"code": "X", "message": "m"})
    journal.close()
    with path.open("ab") as fh:
        fh.write(b'{"seq": 3, "run_id": "r2", "ev')  # the agent died mid-write
    reopened = Journal(path)
    assert reopened.seq == 2 and reopened.get("r1").state == "FAILED"
    assert path.read_bytes().endswith(b"\n")
    reopened.append("r3", "accepted", sha256="b" * 64, settings={})
    assert Journal(path).get("r3") is not None


def test_unfinished_runs_become_interrupted_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append("queued", "accepted", sha256="a" * 64, settings={})
    journal.append("running", "accepted", sha256="a" * 64, settings={})
    journal.append("running", "started")
    journal.append("done", "accepted", sha256="a" * 64, settings={})
    journal.append("done", "finished", state="SUCCEEDED", result={})
    journal.close()
    restarted = Journal(path)
    assert sorted(restarted.close_interrupted("agent stopped")) == ["queued", "running"]
    assert restarted.get("running").state == "INTERRUPTED" and restarted.get("done").state == "SUCCEEDED"
    restarted.close()
    assert Journal(path).close_interrupted("again") == []
