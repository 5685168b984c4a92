"""The agent runs ``.pte`` artifacts: a real agent on 127.0.0.1 (port 0, in-process), a real program lowered to
XNNPACK here, the real ExecuTorch runtime in the worker subprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from agent_helpers import FAST, client_for, write_artifact
from edge_agent.host.client import DeviceCallError
from edge_opt import evalset

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]




def test_device_runs_a_pte_and_its_outputs_match_the_model(agent, tiny_pte, tmp_path: Path) -> None:
    # setup
    port, store = agent
    path, model = tiny_pte
    data = path.read_bytes()
    artifact = write_artifact(tmp_path / "tiny-pte", data, fmt="executorch", input_shape=[1, 1, 28, 28])
    x = np.random.default_rng(3).standard_normal((150, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        host = model(torch.from_numpy(x)).numpy()
    inputs = evalset.publish(tmp_path / "out", {"inputs": x, "labels": host.argmax(1).astype(np.int64)}, {})
    reference = evalset.publish(tmp_path / "out", {"reference": host}, {})
    with client_for(port, timeout=120) as client:
        # execute
        info = client.info()
        sha = client.push(artifact).sha256
        for record in (inputs, reference):
            client.push(tmp_path / "out" / "evalsets" / record["sha256"])
        settings = {**FAST, "threads": 1, "keep_samples": True}
        events = list(client.bench(sha, settings, eval_set_sha256=inputs["sha256"], eval_reference_sha256=reference["sha256"]))
    # assert: device info lists the runtime, the artifact is stored as model.pte
    runtimes = {r["name"]: r for r in info["runtimes"]}
    assert runtimes["executorch"]["version"] == "1.5.1" and "XnnpackBackend" in runtimes["executorch"]["providers"]
    assert (store / "artifacts" / sha / "model.pte").read_bytes() == data
    # the run: executorch, timed, and the fixed input's output is the model's
    last = events[-1]
    assert last["state"] == "RUN_STATE_SUCCEEDED", last
    result = last["result"]
    assert result["runtime"] == "executorch" and result["runtime_version"] == "1.5.1"
    assert result["latency"]["count"] >= FAST["iterations"] and result["latency"]["p50_ms"] > 0
    fixed = np.random.default_rng(1234).standard_normal([1, 1, 28, 28]).astype(np.float32)  # the worker's fixed input
    with torch.no_grad():
        want = model(torch.from_numpy(fixed)).numpy().ravel()
    np.testing.assert_allclose(np.array(result["output_sample"]), want, rtol=1e-4, atol=1e-4)
    # the evaluation ran 150 items through a program planned for batch 1 and reproduced the host's outputs
    evaluation = result["evaluation"]
    assert evaluation["samples"] == 150 and evaluation["top1_accuracy"] == 1.0
    assert evaluation["agreement_with_host"] == 1.0 and evaluation["max_abs_diff"] < 1e-3


def test_batch_above_the_planned_one_fails_with_the_fix(agent, tiny_pte, tmp_path: Path) -> None:
    port, _store = agent
    artifact = write_artifact(tmp_path / "tiny-pte", tiny_pte[0].read_bytes(), fmt="executorch", input_shape=[1, 1, 28, 28])
    with client_for(port, timeout=120) as client:
        sha = client.push(artifact).sha256
        last = list(client.bench(sha, {**FAST, "batch_size": 4}))[-1]
    assert last["state"] == "RUN_STATE_FAILED" and last["error"]["code"] == "RUNTIME_ERROR", last
    assert "planned for batch 1" in last["error"]["message"] and "--batch-size 1" in last["error"]["message"]


def test_a_file_that_is_not_a_program_is_refused(agent, tmp_path: Path) -> None:
    port, store = agent
    onnx_like = write_artifact(tmp_path / "not-pte", b"\x08\x07" + b"\x00" * 300, fmt="executorch")
    corrupt = write_artifact(tmp_path / "corrupt", b"\x1c\x00\x00\x00ET12" + b"\xff" * 300, fmt="executorch")
    with client_for(port, timeout=120) as client:
        # no ExecuTorch identifier: refused at push, nothing kept
        with pytest.raises(DeviceCallError) as err:
            client.push(onnx_like)
        assert err.value.code == "INVALID_ARGUMENT" and "ExecuTorch program" in err.value.details
        # the identifier but no program: stored, then the worker's load fails as MODEL_INVALID (not a crash)
        sha = client.push(corrupt).sha256
        last = list(client.bench(sha, FAST))[-1]
    assert last["state"] == "RUN_STATE_FAILED" and last["error"]["code"] == "MODEL_INVALID", last
    assert "cannot load the program" in last["error"]["message"]
    assert [p.name for p in (store / "artifacts").iterdir()] == [sha]


def test_a_pte_cannot_be_run_with_another_runtime(agent, tiny_pte, tmp_path: Path) -> None:
    port, _store = agent
    artifact = write_artifact(tmp_path / "tiny-pte", tiny_pte[0].read_bytes(), fmt="executorch", input_shape=[1, 1, 28, 28])
    with client_for(port, timeout=120) as client:
        sha = client.push(artifact).sha256
        with pytest.raises(DeviceCallError) as err:
            list(client.bench(sha, {**FAST, "runtime": "RUNTIME_ONNXRUNTIME"}))
    assert err.value.code == "INVALID_ARGUMENT" and "runs with executorch" in err.value.details


class _TwoInputs(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def test_programs_edge_opt_cannot_feed_are_model_invalid_naming_why(agent, tmp_path: Path) -> None:
    from executorch.exir import to_edge

    port, _store = agent
    program = to_edge(torch.export.export(_TwoInputs(), (torch.randn(1, 4), torch.randn(1, 4)))).to_executorch()
    artifact = write_artifact(tmp_path / "two", program.buffer, fmt="executorch", input_shape=[1, 4])
    with client_for(port, timeout=120) as client:
        sha = client.push(artifact).sha256
        last = list(client.bench(sha, FAST))[-1]
        client.wait_ready(5)
    assert last["state"] == "RUN_STATE_FAILED" and last["error"]["code"] == "MODEL_INVALID", last
    assert "takes 2 inputs; edge-opt runs one image tensor" in last["error"]["message"]


def test_graph_optimisation_is_refused_for_a_pte_and_a_second_push_must_agree_on_its_kind(
    agent, tiny_pte, tmp_path: Path
) -> None:
    port, _store = agent
    data = tiny_pte[0].read_bytes()
    artifact = write_artifact(tmp_path / "tiny-pte", data, fmt="executorch", input_shape=[1, 1, 28, 28])
    same_bytes_as_onnx = write_artifact(tmp_path / "claims-onnx", data, fmt="executorch", input_shape=[1, 1, 28, 28])
    manifest = (same_bytes_as_onnx / "manifest.json").read_text().replace('"executorch"', '"onnx"')
    (same_bytes_as_onnx / "manifest.json").write_text(manifest)
    with client_for(port, timeout=120) as client:
        sha = client.push(artifact).sha256
        with pytest.raises(DeviceCallError) as refused:
            list(client.bench(sha, {**FAST, "graph_optimization": "GRAPH_OPT_DISABLE"}))
        assert refused.value.code == "INVALID_ARGUMENT" and "applies to ONNX Runtime only" in str(refused.value)
        with pytest.raises(DeviceCallError) as mismatch:
            client.push(same_bytes_as_onnx)
        assert mismatch.value.code == "INVALID_ARGUMENT"
        assert "already on this device as a fp32 executorch artifact" in str(mismatch.value)
        assert client.push(artifact).already_present  # the same kind again is fine


def test_a_program_planning_more_memory_than_the_device_has_is_refused_before_it_loads(
    agent, tiny_pte, tmp_path: Path
) -> None:
    # The runtime allocates a program's planned memory when its method loads, sized by the file: the worker reads
    # the plan first. Here a 1 TiB plan (one patched number in a real program).
    import struct

    from edge_agent.runtimes.executorch_program import planned_memory_bytes

    data = tiny_pte[0].read_bytes()
    huge = data.replace(struct.pack("<q", planned_memory_bytes(data)), struct.pack("<q", 1 << 40))
    artifact = write_artifact(tmp_path / "huge-pte", huge, fmt="executorch", input_shape=[1, 1, 28, 28])
    port, _store = agent
    with client_for(port, timeout=120) as client:
        sha = client.push(artifact).sha256
        last = list(client.bench(sha, {**FAST, "threads": 1}))[-1]
        info = client.info()
    assert last["state"] == "RUN_STATE_FAILED" and last["error"]["code"] == "MODEL_INVALID", last
    assert "plans 1048576 MiB of working memory" in last["error"]["message"]
    assert info["runtimes"]  # the agent is still answering
