"""Structure-aware fuzzing of every request message of the service (from its descriptors), plus the named bad
inputs of the contract: each gets a status the contract names, never UNKNOWN or INTERNAL, and the agent stays
SERVING with nothing lost."""

from __future__ import annotations

import hashlib
import json
import math

import grpc
import pytest
from agent_helpers import TOKEN, tiny_onnx_bytes
from edge_agent.v1 import agent_pb2 as pb
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reliability.reliability_harness import NEVER, Agent, auth, channel, manifest_for, nothing_lost, push_raw, stub
from reliability.request_fuzz import deep_json, manifests, message_strategy

SERVICE = pb.DESCRIPTOR.services_by_name["EdgeAgent"]
METHODS = [m.name for m in SERVICE.methods]
#: Examples per method; the methods with the most fields to get wrong get more.
MAX_EXAMPLES = {"RunBenchmark": 200, "PushArtifact": 150}
DEFAULT_EXAMPLES = 60


def fuzz_settings(method_name: str) -> settings:
    return settings(
        max_examples=MAX_EXAMPLES.get(method_name, DEFAULT_EXAMPLES),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


MODEL = tiny_onnx_bytes(24)
SHA = hashlib.sha256(MODEL).hexdigest()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    token_file = root / "token"
    token_file.write_text(TOKEN)
    agent = Agent(root / "store", token_file=token_file, args=["--max-queue", "64"])
    agent.start()
    push_raw(agent.port, MODEL, name="fuzz-target")
    yield agent
    agent.close()


def call(port: int, method_name: str, requests: list) -> grpc.StatusCode:
    """One call of any shape, with a deadline; a server stream is read to its first event, then cancelled."""
    method = SERVICE.methods_by_name[method_name]
    path = f"/{SERVICE.full_name}/{method_name}"
    out_class = message_factory.GetMessageClass(method.output_type)
    kwargs = {"request_serializer": lambda m: m.SerializeToString(), "response_deserializer": out_class.FromString}
    with channel(port) as ch:
        try:
            if method.client_streaming:
                ch.stream_unary(path, **kwargs)(iter(requests), timeout=20, metadata=auth())
            elif method.server_streaming:
                stream = ch.unary_stream(path, **kwargs)(requests[0], timeout=20, metadata=auth())
                next(stream, None)
                stream.cancel()
            else:
                ch.unary_unary(path, **kwargs)(requests[0], timeout=20, metadata=auth())
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and method.server_streaming:
                return grpc.StatusCode.OK
            assert exc.code() not in NEVER, f"{method_name}: {exc.code().name}: {(exc.details() or '')[:300]}"
            return exc.code()
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


def requests_for(method_name: str) -> st.SearchStrategy[list]:
    method = SERVICE.methods_by_name[method_name]
    in_class = message_factory.GetMessageClass(method.input_type)
    one = message_strategy(method.input_type, in_class, real_sha=SHA, manifest_size=len(MODEL))
    if "sha256" in method.input_type.fields_by_name:
        # half the time about the real artifact, so the checks behind NOT_FOUND are reached too
        one = st.tuples(one, st.booleans(), st.integers(0, 10**9)).map(lambda t: _aim(*t))
    if not method.client_streaming:
        return one.map(lambda m: [m])
    # a stream: fuzzed messages, and a well-formed header (real sha, fuzzed manifest) followed by fuzzed ones
    header = st.builds(
        lambda manifest, offset: in_class(
            header=pb.PushHeader(sha256=SHA, size_bytes=len(MODEL), name="f", manifest_json=manifest, offset=offset)
        ),
        manifests(SHA, len(MODEL)),
        st.sampled_from([0, 1, len(MODEL), -1, 2**62]),
    )
    return st.one_of(
        st.lists(one, min_size=0, max_size=4), st.tuples(header, st.lists(one, max_size=3)).map(lambda t: [t[0], *t[1]])
    )


def _aim(message, aim: bool, n: int):
    if aim:
        message.sha256 = SHA
        if "run_id" in message.DESCRIPTOR.fields_by_name:
            message.run_id = f"fuzz-{n}"
    return message


def _seed_push(manifest: dict) -> list:
    return [pb.PushRequest(header=pb.PushHeader(sha256="b" * 64, size_bytes=10, name="s", manifest_json=json.dumps(manifest)))]


SEEDS = {
    "RunBenchmark": [
        [pb.RunBenchmarkRequest(run_id="seed-nan", sha256=SHA, settings=pb.BenchmarkSettings(min_seconds=math.nan))],
        [pb.RunBenchmarkRequest(run_id="seed-inf", sha256=SHA, settings=pb.BenchmarkSettings(timeout_seconds=math.inf))],
    ],
    "PushArtifact": [
        _seed_push({"format": "onnx", "precision": "fp32", "file": "model.onnx"}),
        _seed_push({"format": ["onnx"], "precision": "fp32", "file": {"sha256": "b" * 64, "size_bytes": 10}}),
    ],
}


@pytest.mark.parametrize("method_name", METHODS)
def test_fuzzed_requests_never_get_unknown(agent: Agent, method_name: str) -> None:
    seen: dict[str, int] = {}
    push_raw(agent.port, MODEL, name="fuzz-target")  # present again if an earlier method's fuzz deleted it

    @fuzz_settings(method_name)
    @given(requests=requests_for(method_name))
    def check(requests: list) -> None:
        code = call(agent.port, method_name, requests)
        seen[code.name] = seen.get(code.name, 0) + 1

    for requests in SEEDS.get(method_name, []):  # always tried, whatever the random draw
        check = example(requests=requests)(check)

    check()
    assert sum(seen.values()) > 0


GOOD = json.loads(manifest_for(MODEL))
NAMED_MANIFESTS = {
    "file_is_a_string": json.dumps({**GOOD, "file": "model.onnx"}),
    "format_is_a_list": json.dumps({**GOOD, "format": ["onnx"]}),
    "precision_is_an_object": json.dumps({**GOOD, "precision": {"fp32": True}}),
    "size_is_a_float": json.dumps({**GOOD, "file": {**GOOD["file"], "size_bytes": float(len(MODEL)) + 0.5}}),
    "nested_100000_deep": deep_json(100_000),
    "nested_object_40000_deep": '{"a":' * 40_000 + "1" + "}" * 40_000,
    "not_json": "{not json",
}


@pytest.mark.parametrize("case", sorted(NAMED_MANIFESTS))
def test_bad_manifest_is_invalid_argument(agent: Agent, case: str) -> None:
    other = tiny_onnx_bytes(25)
    manifest = NAMED_MANIFESTS[case].replace(SHA, hashlib.sha256(other).hexdigest())
    with pytest.raises(grpc.RpcError) as err:
        push_raw(agent.port, other, manifest=manifest, name="bad-manifest")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{err.value.code().name}: {err.value.details()}"
    assert "Traceback" not in (err.value.details() or "")


NAMED_SETTINGS = {
    "warmup_min_seconds_nan": {"warmup_min_seconds": math.nan},
    "min_seconds_nan": {"min_seconds": math.nan},
    "min_seconds_inf": {"min_seconds": math.inf},
    "timeout_seconds_nan": {"timeout_seconds": math.nan},
    "timeout_seconds_inf": {"timeout_seconds": math.inf},
    "timeout_seconds_minus_inf": {"timeout_seconds": -math.inf},
    "iterations_int32_max": {"iterations": 2**31 - 1},
    "batch_size_negative": {"batch_size": -(2**31)},
    "threads_negative": {"threads": -1},
    "nan_with_valid_rest": {"iterations": 5, "min_seconds": math.nan, "warmup_runs": 1},
}
#: proto3 keeps an enum number it does not know; the contract calls that a malformed field.
UNKNOWN_ENUMS = {"runtime_99": {"runtime": 99}, "graph_optimization_12345": {"graph_optimization": 12345}}


@pytest.mark.parametrize("case", sorted(NAMED_SETTINGS) + sorted(UNKNOWN_ENUMS))
def test_bad_settings_are_invalid_argument(agent: Agent, case: str) -> None:
    request = pb.RunBenchmarkRequest(run_id=f"bad-{case}", sha256=SHA)
    for key, value in {**NAMED_SETTINGS, **UNKNOWN_ENUMS}[case].items():
        setattr(request.settings, key, value)
    with channel(agent.port) as ch, pytest.raises(grpc.RpcError) as err:
        list(stub(ch).RunBenchmark(request, timeout=20, metadata=auth()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{case}: {err.value.code().name}: {err.value.details()}"
    with channel(agent.port) as ch, pytest.raises(grpc.RpcError) as missing:
        stub(ch).GetRun(pb.GetRunRequest(run_id=f"bad-{case}"), timeout=10, metadata=auth())
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # a refused run was never accepted


def test_after_the_fuzz_nothing_is_lost(agent: Agent) -> None:
    agent.kill()  # runs the fuzzer started (with any settings) end INTERRUPTED at the restart
    agent.start()
    push_raw(agent.port, MODEL, name="fuzz-target")  # the fuzzer may have deleted it
    nothing_lost(agent.port, agent.store, {SHA: MODEL})
