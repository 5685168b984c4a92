"""The device checks the outputs it computes: evaluation sets pushed like artifacts, evaluated after the timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from agent_helpers import FAST, client_for, tiny_onnx_bytes, write_artifact
from edge_agent.host.client import DeviceCallError
from edge_opt import evalset

pytestmark = pytest.mark.integration



def test_bench_with_an_evaluation_set_reports_device_accuracy_and_agreement(agent, tmp_path: Path) -> None:
    model = tiny_onnx_bytes()
    artifact = write_artifact(tmp_path / "tiny", model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((300, 1, 28, 28)).astype(np.float32)
    host = session.run(None, {"input": x})[0]
    labels = host.argmax(1).copy()
    labels[:30] = (labels[:30] + 1) % 10
    inputs = evalset.publish(tmp_path / "out", {"inputs": x, "labels": labels.astype(np.int64)}, {})
    honest = evalset.publish(tmp_path / "out", {"reference": host}, {})
    skewed = host.copy()
    skewed[:, 0] += 1.0  # a host whose outputs the device does not reproduce
    biased = evalset.publish(tmp_path / "out", {"reference": skewed}, {})
    root = tmp_path / "out" / "evalsets"
    with client_for(agent[0]) as client:
        sha = client.push(artifact).sha256
        for record in (inputs, honest, biased):
            assert not client.push(root / record["sha256"]).already_present
        assert client.push(root / inputs["sha256"]).already_present  # stored once per device
        last = list(client.bench(sha, FAST, eval_set_sha256=inputs["sha256"], eval_reference_sha256=honest["sha256"]))[-1]
        evaluation = last["result"]["evaluation"]
        assert evaluation["samples"] == 300 and evaluation["top1_accuracy"] == pytest.approx(0.9)
        assert evaluation["agreement_with_host"] == 1.0 and evaluation["max_abs_diff"] < 1e-5
        assert evalset.flags(evaluation, float(np.abs(host).max())) == []
        assert client.get_run(last["run_id"])["result"]["evaluation"] == evaluation  # journaled with the result
        flagged = list(client.bench(sha, FAST, eval_set_sha256=inputs["sha256"], eval_reference_sha256=biased["sha256"]))
        evaluation = flagged[-1]["result"]["evaluation"]
        assert evaluation["max_abs_diff"] == pytest.approx(1.0, abs=1e-4)
        assert evalset.flags(evaluation, float(np.abs(skewed).max()))
        plain = list(client.bench(sha, FAST))[-1]["result"]
        assert "evaluation" not in plain  # no set asked for, no evaluation
        with pytest.raises(DeviceCallError) as err:
            list(client.bench(inputs["sha256"], FAST))
        assert err.value.code == "INVALID_ARGUMENT"  # an evaluation set is not a model
        with pytest.raises(DeviceCallError) as err:
            list(client.bench(sha, FAST, eval_set_sha256="0" * 64))
        assert err.value.code == "NOT_FOUND"
        with pytest.raises(DeviceCallError) as err:
            list(client.bench(sha, FAST, eval_set_sha256=sha))
        assert err.value.code == "INVALID_ARGUMENT"  # a model is not an evaluation set


def test_a_run_id_resent_with_other_evaluation_sets_is_refused_not_attached(agent, tmp_path: Path) -> None:
    model = tiny_onnx_bytes()
    x = np.random.default_rng(5).standard_normal((20, 1, 28, 28)).astype(np.float32)
    host = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    inputs = evalset.publish(tmp_path / "out", {"inputs": x, "labels": host.argmax(1).astype(np.int64)}, {})
    reference = evalset.publish(tmp_path / "out", {"reference": host}, {})
    other_reference = evalset.publish(tmp_path / "out", {"reference": host + 1.0}, {})
    root = tmp_path / "out" / "evalsets"
    with client_for(agent[0]) as client:
        sha = client.push(write_artifact(tmp_path / "tiny", model)).sha256
        for record in (inputs, reference, other_reference):
            client.push(root / record["sha256"])
        sets = {"eval_set_sha256": inputs["sha256"], "eval_reference_sha256": reference["sha256"]}
        first = list(client.bench(sha, FAST, run_id="eval-run", **sets))[-1]
        assert first["result"]["evaluation"]["samples"] == 20
        replay = list(client.bench(sha, FAST, run_id="eval-run", **sets))  # the same run: its stored outcome
        assert len(replay) == 1 and replay[0]["result"]["evaluation"] == first["result"]["evaluation"]
        others = [
            {},  # no evaluation at all
            {"eval_set_sha256": inputs["sha256"]},  # the set without the host's reference
            {**sets, "eval_reference_sha256": other_reference["sha256"]},  # another reference
        ]
        for other in others:
            with pytest.raises(DeviceCallError) as refused:
                list(client.bench(sha, FAST, run_id="eval-run", reconnects=0, **other))
            assert refused.value.code == "INVALID_ARGUMENT", other
            assert "already names a run with other evaluation sets; use another run_id" in refused.value.details
        assert [r["run_id"] for r in client.list_runs()] == ["eval-run"]
