"""A corrupt journal: the agent starts, keeps every valid record (also those after the bad line) and reports the
bad ones. A torn last line (power loss) is still truncated with every earlier record kept."""

from __future__ import annotations

import json

import grpc
import pytest
from agent_helpers import tiny_onnx_bytes
from edge_agent.v1 import agent_pb2 as pb

from reliability.reliability_harness import auth, channel, get_run, nothing_lost, push_raw, run_to_end, stub

BAD_LINES = {
    "garbage": b"\x00\x13garbage{{{ not json at all",
    "empty_object": b"{}",
    "wrong_types": b'{"seq": "two", "run_id": 7, "event": ["accepted"]}',
}


def _three_runs(agent) -> tuple[str, dict[str, float]]:
    sha = push_raw(agent.port, tiny_onnx_bytes(14)).artifact.sha256
    p50 = {}
    for i in range(3):
        events = run_to_end(agent.port, sha, run_id=f"j{i}")
        assert events[-1].state == pb.RUN_STATE_SUCCEEDED
        p50[f"j{i}"] = events[-1].result.latency.p50_ms
    return sha, p50


def _insert_after_first_finish(journal, bad: bytes) -> None:
    lines = journal.read_bytes().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if json.loads(line)["event"] == "finished")
    assert first < len(lines) - 1, "the bad line must go in the middle"
    journal.write_bytes(b"".join([*lines[: first + 1], bad + b"\n", *lines[first + 1 :]]))


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_in_the_middle_loses_nothing(make_agent, case: str) -> None:
    agent = make_agent()
    sha, p50 = _three_runs(agent)
    assert agent.terminate() == 0
    journal = agent.store / "runs" / "journal.jsonl"
    _insert_after_first_finish(journal, BAD_LINES[case])
    agent.start()  # must start (no crash loop under systemd)
    for run_id, value in p50.items():
        record = get_run(agent.port, run_id)
        assert record.state == pb.RUN_STATE_SUCCEEDED, f"{run_id}: {pb.RunState.Name(record.state)}"
        assert record.result.latency.p50_ms == value
    with channel(agent.port) as ch:
        runs = stub(ch).ListRuns(pb.ListRunsRequest(), timeout=10, metadata=auth()).runs
    assert sorted(r.run_id for r in runs) == sorted(p50)
    startup = agent.output().lower()
    assert any("journal" in line and ("line" in line or "skip" in line or "corrupt" in line) for line in startup.splitlines()), (
        "the agent did not report the bad journal line"
    )
    # results written after the repair are kept too, across another restart
    assert run_to_end(agent.port, sha, run_id="j3")[-1].state == pb.RUN_STATE_SUCCEEDED
    agent.kill()
    agent.start()
    for run_id in [*p50, "j3"]:
        assert get_run(agent.port, run_id).state == pb.RUN_STATE_SUCCEEDED, run_id
    nothing_lost(agent.port, agent.store, accepted_runs=[*p50, "j3"], allow_bad_journal_lines=True)


def test_torn_last_line_is_truncated_and_the_rest_kept(make_agent) -> None:
    agent = make_agent()
    _sha, p50 = _three_runs(agent)
    agent.kill()
    journal = agent.store / "runs" / "journal.jsonl"
    journal.write_bytes(journal.read_bytes() + b'{"seq": 99, "run_id": "torn", "eve')
    agent.start()
    for run_id in p50:
        assert get_run(agent.port, run_id).state == pb.RUN_STATE_SUCCEEDED
    with pytest.raises(grpc.RpcError) as err:
        get_run(agent.port, "torn")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    nothing_lost(agent.port, agent.store, accepted_runs=list(p50))
