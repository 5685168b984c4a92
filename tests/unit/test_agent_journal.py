from __future__ import annotations

from pathlib import Path

import pytest
from edge_agent.runs.journal import Journal

pytestmark = pytest.mark.unit

#: What the run manager records: resolved settings (the runtime) are part of every accepted entry.
S = {"runtime": "onnxruntime"}


def test_records_fold_and_seq_is_monotonic(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append("r1", "accepted", sha256="a" * 64, settings={**S, "iterations": 5})
    journal.append("r1", "started")
    journal.append("r1", "finished", state="SUCCEEDED", result={"latency": {"p50_ms": 1.0}})
    record = journal.get("r1")
    assert record is not None and record.state == "SUCCEEDED" and record.result == {"latency": {"p50_ms": 1.0}}
    assert record.seq == 3 and journal.seq == 3


def test_torn_tail_is_truncated_and_earlier_entries_kept(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append("r1", "accepted", sha256="a" * 64, settings=S)
    journal.append("r1", "finished", state="FAILED", error={"code": "X", "message": "m"})
    journal.close()
    with path.open("ab") as fh:
        fh.write(b'{"seq": 3, "run_id": "r2", "ev')  # the agent died mid-write
    reopened = Journal(path)
    assert reopened.seq == 2 and reopened.get("r1").state == "FAILED"
    assert path.read_bytes().endswith(b"\n")
    reopened.append("r3", "accepted", sha256="b" * 64, settings=S)
    assert Journal(path).get("r3") is not None


def test_unfinished_runs_become_interrupted_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append("queued", "accepted", sha256="a" * 64, settings=S)
    journal.append("running", "accepted", sha256="a" * 64, settings=S)
    journal.append("running", "started")
    journal.append("done", "accepted", sha256="a" * 64, settings=S)
    journal.append("done", "finished", state="SUCCEEDED", result={})
    journal.close()
    restarted = Journal(path)
    assert sorted(restarted.close_interrupted("agent stopped")) == ["queued", "running"]
    assert restarted.get("running").state == "INTERRUPTED" and restarted.get("done").state == "SUCCEEDED"
    restarted.close()
    assert Journal(path).close_interrupted("again") == []


def test_garbage_in_the_middle_keeps_every_valid_record_and_sets_the_bad_ones_aside(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    for run in ("r1", "r2", "r3"):
        journal.append(run, "accepted", sha256="a" * 64, settings=S)
        journal.append(run, "finished", state="SUCCEEDED", result={"latency": {"p50_ms": 1.0}})
    journal.close()
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(2, b"\x00\xffnot json at all\n")
    lines.insert(4, b"{}\n")
    lines[5] = lines[5].replace(b"SUCCEEDED", b"SUCCEEDEX")  # a flipped byte: the checksum no longer matches
    path.write_bytes(b"".join(lines))
    reopened = Journal(path)
    assert reopened.get("r1").state == "SUCCEEDED" and reopened.get("r3").state == "SUCCEEDED"
    assert reopened.get("r2").state == "QUEUED"  # its damaged "finished" entry was set aside
    assert len(reopened.problems) == 3 and all("set aside" in p for p in reopened.problems)
    rejected = (tmp_path / "j.jsonl.rejected").read_bytes()
    assert b"not json" in rejected and b"{}" in rejected
    assert reopened.close_interrupted("agent restarted") == ["r2"]
    reopened.append("r4", "accepted", sha256="b" * 64, settings=S)
    reopened.close()
    again = Journal(path)
    assert again.problems == [] and again.get("r4") is not None and again.get("r2").state == "INTERRUPTED"


_FULL_DISK_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from edge_agent.runs.journal import Journal, JournalUnavailable
path = Path(sys.argv[1])
journal = Journal(path)
journal.append("r1", "accepted", sha256="a" * 64, settings={"runtime": "onnxruntime"})
size = path.stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, resource.RLIM_INFINITY))  # the kernel refuses longer files
try:
    journal.append("r1", "finished", state="SUCCEEDED", result={"latency": {"p50_ms": 1.0}})
    print("appended")
except JournalUnavailable:
    print("refused", path.stat().st_size == size, journal.get("r1").state, journal.seq)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
journal.append("r1", "finished", state="SUCCEEDED", result={})
print("recovered", journal.seq)
"""


def test_a_failed_append_leaves_no_torn_line_and_the_next_one_continues(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "j.jsonl"
    out = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["refused", "True", "QUEUED", "1", "recovered", "2"], out.stdout + out.stderr
    reopened = Journal(path)
    assert reopened.problems == [] and reopened.get("r1").state == "SUCCEEDED" and reopened.seq == 2


def _finish(journal: Journal, run_id: str, samples: int = 0) -> None:
    journal.append(run_id, "accepted", sha256="a" * 64, settings={**S, "iterations": 5})
    journal.append(run_id, "started")
    latency = {"p50_ms": 1.0, "samples_ms": [0.5 + i / 1000 for i in range(samples)]}
    journal.append(run_id, "finished", state="SUCCEEDED", result={"latency": latency})


def test_the_journal_keeps_its_newest_runs_and_compacts_the_rest_away(tmp_path: Path) -> None:
    # Every result used to stay in the file and in memory for good: ~0.8 MiB of memory per run with 20,000 samples,
    # past a Pi service's memory ceiling after about a thousand runs.
    path = tmp_path / "j.jsonl"
    journal = Journal(path, keep_runs=10)
    journal.append("waiting", "accepted", sha256="b" * 64, settings=S)  # never dropped: not finished
    for i in range(30):
        _finish(journal, f"r{i:02d}", samples=100)
    finished = sorted(r.run_id for r in journal.records.values() if r.terminal)
    assert 10 <= len(finished) <= 18 and finished[-1] == "r29"  # compacted when a quarter more (8 at least) finished
    assert journal.get("r00") is None and journal.get("waiting").state == "QUEUED"
    assert journal.get("r29").result["latency"]["samples_ms"][1] == 0.501  # samples packed in memory, same values
    seq = journal.seq
    journal.close()
    # the file holds exactly what memory does, and a restart sees the same runs and continues the sequence
    lines = path.read_bytes().splitlines()
    assert len(lines) < 3 * 18 + 2
    reopened = Journal(path, keep_runs=10)
    assert sorted(r.run_id for r in reopened.records.values() if r.terminal) == finished
    assert reopened.get("waiting").state == "QUEUED"  # the run manager closes it INTERRUPTED at start
    assert list(reopened.get("r29").result["latency"]["samples_ms"])[:2] == [0.5, 0.501]
    assert reopened.seq == seq and reopened.problems == []
    _finish(reopened, "after")
    assert reopened.get("after").seq > seq


def test_packed_samples_serve_as_lists(tmp_path: Path) -> None:
    from edge_agent.service.servicer import run_record_pb

    journal = Journal(tmp_path / "j.jsonl")
    _finish(journal, "r", samples=3)
    record = run_record_pb(journal.get("r"))
    assert list(record.result.latency.samples_ms) == [0.5, 0.501, 0.502]


def test_a_compaction_whose_folder_flush_fails_keeps_every_later_entry(tmp_path: Path, monkeypatch) -> None:
    # Once the compacted file has replaced the journal, appends must go to it, even if flushing the folder fails
    # (they once went on into the replaced, deleted file: acknowledged entries gone at the next start).
    from edge_agent.runs import journal as journal_module

    path = tmp_path / "j.jsonl"
    journal = Journal(path, keep_runs=2)

    def failing_fsync_dir(_path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module, "fsync_dir", failing_fsync_dir)
    for i in range(12):
        _finish(journal, f"r{i}")
    monkeypatch.undo()
    _finish(journal, "after")
    journal.close()
    reopened = Journal(path, keep_runs=2)
    assert reopened.get("after") is not None and reopened.get("after").state == "SUCCEEDED"
    assert reopened.get("r11") is not None


def test_samples_are_stored_packed_and_lists_from_older_lines_still_read(tmp_path: Path) -> None:
    import json

    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    _finish(journal, "new", samples=3)
    journal.close()
    line = json.loads(path.read_bytes().splitlines()[-1])
    assert set(line["result"]["latency"]["samples_ms"]) == {"f64le_base64"}  # text, not thousands of numbers
    from edge_agent.runs.journal_entries import encode_entry

    old = {"seq": 10, "run_id": "old", "event": "accepted", "ts": "t", "sha256": "a" * 64, "settings": S}
    done = {"seq": 11, "run_id": "old", "event": "finished", "ts": "t", "state": "SUCCEEDED"}
    done["result"] = {"latency": {"p50_ms": 1.0, "samples_ms": [1.5, 2.5]}}
    with path.open("ab") as fh:
        fh.write(encode_entry(old) + encode_entry(done))
    reopened = Journal(path)
    assert list(reopened.get("new").result["latency"]["samples_ms"]) == [0.5, 0.501, 0.502]
    assert list(reopened.get("old").result["latency"]["samples_ms"]) == [1.5, 2.5]
    assert reopened.problems == []


def test_a_checksummed_line_the_wire_cannot_carry_is_set_aside_not_served(tmp_path: Path) -> None:
    # A well-formed line with a result field of the wrong type (output_sample as a string) used to be kept, and
    # every GetRun of it, and every ListRuns page holding it, then failed INTERNAL: no collector got past it.
    from edge_agent.runs.journal_entries import encode_entry

    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    _finish(journal, "good")
    journal.close()
    bad = {"seq": 9, "run_id": "bad", "event": "record", "ts": "t", "sha256": "a" * 64, "settings": S}
    bad |= {"state": "SUCCEEDED", "accepted_at": "t", "finished_at": "t"}
    bad["result"] = {"latency": {"p50_ms": 1.0}, "output_sample": "not numbers"}
    with path.open("ab") as fh:
        fh.write(encode_entry(bad))
    _finish_later = Journal(path)
    assert _finish_later.get("bad") is None and _finish_later.get("good") is not None
    assert len(_finish_later.problems) == 1 and "the wire cannot carry" in _finish_later.problems[0]


def test_a_planted_sequence_at_the_ceiling_degrades_the_journal_instead_of_losing_results(tmp_path: Path) -> None:
    # An entry at seq 2**53 - 1 made every later result get a seq the next start refuses: acknowledged, then lost.
    from edge_agent.runs.journal import JournalUnavailable
    from edge_agent.runs.journal_entries import MAX_SEQ, encode_entry

    path = tmp_path / "j.jsonl"
    entry = {"seq": MAX_SEQ - 1, "run_id": "planted", "event": "accepted", "ts": "t", "sha256": "a" * 64, "settings": S}
    path.write_bytes(encode_entry(entry))
    journal = Journal(path)
    with pytest.raises(JournalUnavailable, match="sequence numbers are used up"):
        journal.append("r", "accepted", sha256="b" * 64, settings=S)
    assert Journal(path).get("r") is None  # nothing was acknowledged that a start would drop
