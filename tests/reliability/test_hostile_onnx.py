"""Hostile ONNX models pushed to a real agent: each refused with INVALID_ARGUMENT, nothing committed, nothing
staged, and refused the same way when pushed again (never "resumed" at its end)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
from edge_agent.v1 import agent_pb2 as pb

from reliability.hostile_onnx import host_refused_models, hostile_models, refused_at_push_or_benchmark, write_corpus
from reliability.reliability_harness import NEVER, Agent, auth, channel, nothing_lost, push_raw, run_to_end, stub

MODELS = hostile_models()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hostile")
    from agent_helpers import TOKEN

    token_file = root / "token"
    token_file.write_text(TOKEN)
    agent = Agent(root / "store", token_file=token_file)
    agent.start()
    yield agent
    agent.close()


def _stat(port: int, sha: str) -> pb.StatArtifactResponse:
    with channel(port) as ch:
        return stub(ch).StatArtifact(pb.StatArtifactRequest(sha256=sha), timeout=10, metadata=auth())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hostile_model_is_refused_and_nothing_is_kept(agent: Agent, name: str) -> None:
    data = MODELS[name]
    sha = hashlib.sha256(data).hexdigest()
    for attempt in ("first push", "re-push"):
        with pytest.raises(grpc.RpcError) as err:
            push_raw(agent.port, data, name=f"hostile-{attempt[:2]}", timeout=30)
        code = err.value.code()
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{name} ({attempt}): {code.name}: {err.value.details()}"
        staging = sorted(p.name for p in (agent.store / "staging").iterdir())
        assert staging == [], f"{name} ({attempt}) left {staging} in staging/"
        assert not (agent.store / "artifacts" / sha).exists(), f"{name} ({attempt}) was committed"
        stat = _stat(agent.port, sha)
        assert (stat.present, stat.staged_bytes) == (False, 0), f"{name} ({attempt}): {stat}"
    with channel(agent.port) as ch:
        listed = stub(ch).ListArtifacts(pb.ListArtifactsRequest(), timeout=10, metadata=auth()).artifacts
    assert sha not in {a.sha256 for a in listed}


@pytest.mark.parametrize("name", sorted(refused_at_push_or_benchmark()))
def test_huge_dims_are_refused_at_push_or_at_benchmark(agent: Agent, name: str) -> None:
    data = refused_at_push_or_benchmark()[name]
    try:
        reply = push_raw(agent.port, data, name="huge", timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code().name}: {exc.details()}"
        return
    try:
        events = run_to_end(agent.port, reply.artifact.sha256, timeout=120)
    except grpc.RpcError as exc:
        assert exc.code() not in NEVER and exc.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code().name}: {exc.details()}"
        return
    assert events[-1].state == pb.RUN_STATE_FAILED, events[-1]
    assert events[-1].error.code in ("MODEL_INVALID", "OOM", "RUNTIME_ERROR"), events[-1]


def test_the_corpus_is_written_and_the_agent_survives_it(agent: Agent, tmp_path: Path) -> None:
    paths = write_corpus(tmp_path / "malicious_onnx")
    assert len(paths) == len(MODELS) + len(refused_at_push_or_benchmark()) + len(host_refused_models())
    nothing_lost(agent.port, agent.store, {})
