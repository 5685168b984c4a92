"""Hostile evaluation sets and models that cannot be evaluated, pushed to a real agent (a subprocess): a set the
store cannot vouch for is refused at push (INVALID_ARGUMENT, nothing committed, nothing left in staging); a set or
a model that fails only when the worker evaluates it leaves the run SUCCEEDED with its timing and the evaluation's
error named; a model that fails on its own declared input is MODEL_INVALID in one line. Then nothing is lost."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import grpc
import numpy as np
import pytest
from agent_helpers import FAST
from edge_agent.v1 import agent_pb2 as pb
from edge_opt import evalset
from google.protobuf import json_format
from onnx import TensorProto, helper

from reliability.reliability_harness import Agent, auth, channel, nothing_lost, push_raw, stub

pytestmark = pytest.mark.reliability

X = np.random.default_rng(0).standard_normal((12, 3, 4, 4)).astype(np.float32)
LABELS = (np.arange(12) % 3).astype(np.int64)


def _model(dims: list, nodes: list | None = None) -> bytes:
    nodes = nodes or [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _manifest(data: bytes, fmt: str, shape: list | None = None) -> str:
    record = {
        "name": "evalset.npz" if fmt == "evalset" else "model.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
    }
    manifest = {"schema_version": 1, "format": fmt, "precision": "fp32", "file": record}
    if shape is not None:
        manifest["input"] = {"name": "x", "shape": shape, "dtype": "float32"}
    return json.dumps(manifest)


def _npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content, compress_type=compression)
    return buffer.getvalue()


def _npy(array: np.ndarray | None = None, *, shape: tuple | None = None) -> bytes:
    if shape is not None:
        text = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
        text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
        return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(64)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _broken_deflate() -> bytes:
    """The inputs member deflated, its stream damaged where the .npy header is: reading the header fails in zlib."""
    data = bytearray(_npz({"inputs.npy": _npy(X)}, zipfile.ZIP_DEFLATED))
    start = data.index(b"inputs.npy") + len("inputs.npy")  # the local header's name ends where the stream begins
    data[start + 2 : start + 40] = b"\xff" * 38
    return bytes(data)


def _bad_crc() -> bytes:
    """A stored set whose inputs' bytes no longer match their CRC: the header reads (the first 4 KiB of a member of
    38 KiB), the data does not."""
    x = np.random.default_rng(1).standard_normal((200, 3, 4, 4)).astype(np.float32)
    data = bytearray(_npz({"inputs.npy": _npy(x), "labels.npy": _npy((np.arange(200) % 3).astype(np.int64))}))
    data[20_000] ^= 0xFF
    return bytes(data)


REFUSED_AT_PUSH = {
    "deflate stream broken in the header": _broken_deflate,
    "shape whose product wraps around 2^64": lambda: _npz({"inputs.npy": _npy(shape=(1, 1 << 32, 1 << 32))}),
    "negative dimension": lambda: _npz({"inputs.npy": _npy(shape=(1, -3, 4, 4))}),
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    from agent_helpers import TOKEN

    root = tmp_path_factory.mktemp("hostile-evalsets")
    (root / "token").write_text(TOKEN)
    agent = Agent(root / "store", token_file=root / "token")
    agent.start()
    yield agent
    agent.close()


@pytest.mark.parametrize("case", sorted(REFUSED_AT_PUSH))
def test_a_set_the_store_cannot_vouch_for_is_refused_at_push(agent: Agent, case: str) -> None:
    data = REFUSED_AT_PUSH[case]()
    with pytest.raises(grpc.RpcError) as err:
        push_raw(agent.port, data, name="hostile-set", manifest=_manifest(data, "evalset"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{err.value.code().name}: {err.value.details()}"
    assert sorted(p.name for p in (agent.store / "staging").iterdir()) == []
    assert not (agent.store / "artifacts" / hashlib.sha256(data).hexdigest()).exists()


def _push(agent: Agent, data: bytes, fmt: str, shape: list | None = None) -> str:
    reply = push_raw(agent.port, data, name=f"{fmt}-{hashlib.sha256(data).hexdigest()[:8]}", manifest=_manifest(data, fmt, shape))
    return reply.artifact.sha256


def _run(agent: Agent, model: str, eval_set: str = "", reference: str = "") -> pb.RunEvent:
    request = pb.RunBenchmarkRequest(sha256=model, eval_set_sha256=eval_set, eval_reference_sha256=reference)
    json_format.ParseDict(FAST, request.settings)
    with channel(agent.port) as ch:
        events = list(stub(ch).RunBenchmark(request, timeout=120, metadata=auth()))
    return events[-1]


def test_what_fails_only_in_the_worker_leaves_the_timing_and_names_the_evaluation(agent: Agent) -> None:
    # setup: a model of a dynamic batch, one fixing its batch to 1, one giving two rows of outputs per item,
    # one fixing its batch to 0 (ONNX Runtime then refuses any input); sets damaged or with NaN reference outputs
    acknowledged: dict[str, bytes] = {}  # models (the audit reads model.*); the sets are checked below
    sets: dict[str, bytes] = {}

    def push(data: bytes, fmt: str, shape: list | None = None) -> str:
        sha = _push(agent, data, fmt, shape)
        (sets if fmt == "evalset" else acknowledged)[sha] = data
        return sha

    plain = push(_model(["batch", 3, 4, 4]), "onnx", ["batch", 3, 4, 4])
    fixed = push(_model([1, 3, 4, 4]), "onnx", [1, 3, 4, 4])
    doubled = push(
        _model(
            ["batch", 3, 4, 4], [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Concat", ["f", "f"], ["y"], axis=0)]
        ),
        "onnx",
        ["batch", 3, 4, 4],
    )
    zero_batch = push(_model([0, 3, 4, 4]), "onnx", ["batch", 3, 4, 4])
    good_set = push(evalset.npz_bytes({"inputs": X, "labels": LABELS}), "evalset")
    damaged_set = push(_bad_crc(), "evalset")
    nan_reference = push(evalset.npz_bytes({"reference": np.full((12, 3), np.nan, np.float32)}), "evalset")
    # execute
    runs = {
        "damaged set": _run(agent, plain, damaged_set),
        "NaN reference": _run(agent, plain, good_set, nan_reference),
        "two rows per item": _run(agent, doubled, good_set),
        "fixed batch": _run(agent, fixed, good_set),
        "zero batch": _run(agent, zero_batch, good_set),
    }
    # assert: the timing stands and the evaluation says what went wrong, in one line
    expected = {
        "damaged set": "Bad CRC-32",
        "NaN reference": "reference outputs hold NaN or infinite values",
        "two rows per item": "one row of outputs per item",
    }
    for name, words in expected.items():
        event = runs[name]
        assert event.state == pb.RUN_STATE_SUCCEEDED, f"{name}: {event}"
        assert event.result.latency.count >= 5 and words in event.result.evaluation.error, f"{name}: {event.result.evaluation}"
    fed_one_at_a_time = runs["fixed batch"].result.evaluation
    assert runs["fixed batch"].state == pb.RUN_STATE_SUCCEEDED and not fed_one_at_a_time.error, fed_one_at_a_time
    assert fed_one_at_a_time.samples == 12 and fed_one_at_a_time.HasField("top1_accuracy")
    zero = runs["zero batch"]
    assert zero.state == pb.RUN_STATE_FAILED and zero.error.code == "MODEL_INVALID", zero
    assert "input of shape [1, 3, 4, 4]" in zero.error.message and "Expected: 0" in zero.error.message
    assert "\n" not in zero.error.message
    nothing_lost(agent.port, agent.store, acknowledged, [e.run_id for e in runs.values()])
    for sha, data in sets.items():
        assert (agent.store / "artifacts" / sha / "evalset.npz").read_bytes() == data
