"""Hostile LiteRT models (``.tflite``) pushed to a real agent: each is refused at push (INVALID_ARGUMENT, nothing
kept) or accepted and then a failed run (MODEL_INVALID, OOM or RUNTIME_ERROR), never an UNKNOWN or INTERNAL
status; the agent stays alive and serves a good model afterwards.

The malformed files are a real model converted here (litert-torch), corrupted byte-wise or re-packed with one field
changed through LiteRT's own FlatBuffer schema (absurd shapes, an out-of-range buffer, tensor or opcode index).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from edge_agent.v1 import agent_pb2 as pb

from reliability.reliability_harness import NEVER, Agent, manifest_for, nothing_lost, push_raw, run_to_end

pytestmark = [pytest.mark.reliability]


@pytest.fixture(scope="module")
def good_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real 1x28x28 → 10 LiteRT model converted by the litert format's converter."""
    from edge_opt.formats.litert import convert_fp32
    from edge_test_models import tiny

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("litert") / "model.tflite"
    convert_fp32(tiny().eval(), torch.randn(1, 1, 28, 28), path)
    return path.read_bytes()


def _repacked(good: bytes, mutate: Callable[[object], None]) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema  # FlatBuffer code only (no protobuf descriptors)

    model = schema.ModelT.InitFromPackedBuf(bytearray(good), 0)
    mutate(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _graph(m: object) -> object:
    return m.subgraphs[0]  # type: ignore[attr-defined]


def _input(m: object) -> object:
    g = _graph(m)
    return g.tensors[g.inputs[0]]


def _set_input_shape(shape: list[int]) -> Callable[[object], None]:
    def mutate(m: object) -> None:
        _input(m).shape = np.array(shape, dtype=np.int32)

    return mutate


def _huge_intermediate(m: object) -> None:
    g = _graph(m)
    g.tensors[g.operators[0].outputs[0]].shape = np.array([1 << 30, 1 << 30], dtype=np.int32)


def _buffer_out_of_range(m: object) -> None:
    tensor = next(t for t in _graph(m).tensors if t.buffer)
    tensor.buffer = 10**6


def _tensor_index_out_of_range(m: object) -> None:
    _graph(m).operators[0].inputs[0] = 99999


def _opcode_index_out_of_range(m: object) -> None:
    _graph(m).operators[0].opcodeIndex = 999


#: Files the store refuses from their first bytes (size, identifier, root offset).
REFUSED_AT_PUSH: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda good: b"",
    "random_4k": lambda good: np.random.default_rng(0).bytes(4096),
    "truncated_16_bytes": lambda good: good[:15],
    "wrong_identifier": lambda good: good[:4] + b"XXXX" + good[8:],
    "root_offset_past_the_end": lambda good: (len(good) + 100).to_bytes(4, "little") + good[4:],
}
#: Files that pass the cheap check and that the interpreter's verifier or its allocation refuses in the worker.
REFUSED_AT_PUSH_OR_RUN: dict[str, Callable[[bytes], bytes]] = {
    "random_with_identifier": lambda good: (16).to_bytes(4, "little") + b"TFL3" + np.random.default_rng(1).bytes(4088),
    "truncated_half": lambda good: good[: len(good) // 2],
    "input_shape_overflows": lambda good: _repacked(good, _set_input_shape([1 << 20] * 4)),
    "input_shape_negative": lambda good: _repacked(good, _set_input_shape([-5, 1, 28, 28])),
    "input_shape_absurd": lambda good: _repacked(good, _set_input_shape([65536, 65536, 65536, 1])),
    "intermediate_shape_absurd": lambda good: _repacked(good, _huge_intermediate),
    "buffer_out_of_range": lambda good: _repacked(good, _buffer_out_of_range),
    "tensor_index_out_of_range": lambda good: _repacked(good, _tensor_index_out_of_range),
    "opcode_index_out_of_range": lambda good: _repacked(good, _opcode_index_out_of_range),
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hostile-litert")
    from agent_helpers import TOKEN

    token_file = root / "token"
    token_file.write_text(TOKEN)
    agent = Agent(root / "store", token_file=token_file)
    agent.start()
    yield agent
    agent.close()


def _push(agent: Agent, data: bytes, name: str) -> pb.PushResponse:
    return push_raw(agent.port, data, name=name, manifest=manifest_for(data, fmt="litert"), timeout=30)


@pytest.mark.parametrize("name", sorted(REFUSED_AT_PUSH))
def test_malformed_tflite_is_refused_at_push(agent: Agent, good_model: bytes, name: str) -> None:
    data = REFUSED_AT_PUSH[name](good_model)
    with pytest.raises(grpc.RpcError) as err:
        _push(agent, data, name)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {err.value.code().name}: {err.value.details()}"
    assert sorted(p.name for p in (agent.store / "staging").iterdir()) == []


@pytest.mark.parametrize("name", sorted(REFUSED_AT_PUSH_OR_RUN))
def test_hostile_tflite_is_refused_or_a_failed_run(agent: Agent, good_model: bytes, name: str) -> None:
    data = REFUSED_AT_PUSH_OR_RUN[name](good_model)
    try:
        reply = _push(agent, data, name)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {exc.code().name}: {exc.details()}"
        return
    try:
        events = run_to_end(agent.port, reply.artifact.sha256, timeout=120)
    except grpc.RpcError as exc:
        assert exc.code() not in NEVER, f"{name}: {exc.code().name}: {exc.details()}"
        return
    assert events[-1].state == pb.RUN_STATE_FAILED, f"{name}: {events[-1]}"
    assert events[-1].error.code in ("MODEL_INVALID", "OOM", "RUNTIME_ERROR"), f"{name}: {events[-1]}"


def test_the_agent_survives_and_still_runs_a_good_tflite(agent: Agent, good_model: bytes, tmp_path: Path) -> None:
    reply = _push(agent, good_model, "good")
    events = run_to_end(agent.port, reply.artifact.sha256, timeout=120)
    assert events[-1].state == pb.RUN_STATE_SUCCEEDED, events[-1]
    assert events[-1].result.runtime == "litert"
    nothing_lost(agent.port, agent.store, {})
