"""The agent on an (emulated) Raspberry Pi 4: a real aarch64 Python under qemu user-mode.

The x86 host exports SmallCNN INT8 ONNX for the arm64 target, pushes it with its evaluation sets to the emulated
agent and benchmarks it there. What is asserted, and why it holds on every x86 host:

* the device's outputs equal the model's own semantics (ONNX Runtime with graph optimisations disabled: the QDQ
  graph executed as written) to float rounding, or one output quantization step where a fused integer kernel
  rounds a tie the other way, for the fixed input and on every image of the evaluation set;
* the device's accuracy on the evaluation set is the host's, because the host evaluates an artifact built for
  another target with the model's semantics (its manifest says ``reference-semantics``);
* separately, the host's own optimised INT8 kernels are compared with the semantics: on the VNNI x86 they agreed
  on the fixed input and were at most one output quantization step apart on 1,000 images (same top-1 everywhere);
  on an AVX2-only x86 (no VNNI) ONNX Runtime's kernels for int8 activations differ by a few steps. That
  difference is documented (bounded, recorded in the manifest), never asserted away.

Function only, never timing: emulation is 35-300x slower than a real Pi. ``EDGE_ARM64_PYTHON`` names the launcher
made by ``scripts/arm64_python.sh`` (``.ci/run`` provisions it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from agent_helpers import TOKEN, AgentProcess, client_for
from edge_opt import evalset
from edge_opt.config import parse_config
from edge_opt.export.pipeline import run_export
from edge_opt.formats.evaluation import output_step

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cpus]


@pytest.fixture(scope="module")
def arm64_python() -> str:
    launcher = os.environ.get("EDGE_ARM64_PYTHON", "")
    if not launcher or not Path(launcher).is_file():
        message = "EDGE_ARM64_PYTHON is not set: run scripts/arm64_python.sh DIR and export its output"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return launcher


def _session(path: Path, *, semantics: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if semantics:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def test_int8_onnx_for_arm64_runs_on_emulated_pi_with_the_models_semantics(
    arm64_python: str, tmp_path: Path, data_root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_OPT_CACHE_DIR", str(cache_dir))
    config = parse_config(
        {
            "target": "arm64",
            "precisions": ["int8"],
            "formats": ["onnx"],
            "data": {"root": str(data_root), "download": False, "eval_samples": 1000},
            "export": {"device_eval_samples": 200},
            "benchmark": {"iterations": 3, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
        }
    )
    report = run_export(config, tmp_path / "art")
    artifact = next(r.path for r in report.rows if r.path is not None)
    model = artifact / "model.onnx"
    manifest = json.loads((artifact / "manifest.json").read_text())
    metrics = manifest["host_metrics"]
    # An x86 host is never the arm64 target: the host evaluated with the model's semantics, and says so.
    assert metrics["evaluation"]["mode"] == "reference-semantics"
    assert metrics["evaluation"]["artifact_target"] == "arm64" and metrics["evaluation"]["host_target"] != "arm64"
    token = tmp_path / "token"
    token.write_text(TOKEN)
    agent = AgentProcess(tmp_path / "store", token, python=arm64_python, env={"PYTHONPATH": ""})
    try:
        port = agent.start(timeout=120)
        with client_for(port, timeout=120) as client:
            info = client.info()
            assert info["arch"] == "aarch64" and info["suggested_target"] == "arm64"
            assert "asimd" in info["cpu_flags"] and info["board_model"].startswith("Raspberry Pi 4")
            pushed = client.push(artifact)
            eval_shas = evalset.push_eval_sets(client, artifact)
            assert set(eval_shas) == {"eval_set_sha256", "eval_reference_sha256"}
            settings = {
                "iterations": 3,
                "min_seconds": 0.01,
                "warmup_runs": 1,
                "warmup_min_seconds": 0.01,
                "timeout_seconds": 600,
            }
            last = list(client.bench(pushed.sha256, settings, **eval_shas))[-1]
        assert last["state"] == "RUN_STATE_SUCCEEDED", last
    finally:
        agent.close()
    device_out = np.array(last["result"]["output_sample"], dtype=np.float64)
    # The same fixed input the worker uses, run on the host with the model's semantics.
    fixed = np.random.default_rng(1234).standard_normal([1, 1, 28, 28]).astype(np.float32)
    semantics_out = _session(model, semantics=True).run(None, {"input": fixed})[0].ravel().astype(np.float64)
    assert device_out.shape == semantics_out.shape == (10,)
    # Tight: float rounding, or at most one output quantization step where the device's fused integer kernel rounds
    # a tie the other way (seen once in 1,000 images, never changing the top-1); an AVX2-only host's kernels were two.
    step = output_step(model)
    assert step > 0  # the logits come out of a DequantizeLinear
    assert np.argmax(device_out) == np.argmax(semantics_out)
    np.testing.assert_allclose(device_out, semantics_out, atol=step + 1e-5, rtol=0)

    # On the evaluation set (200 test images): the device reproduces the host's semantic outputs and accuracy.
    evaluation = last["result"]["evaluation"]
    assert evaluation["samples"] == 200 and not evaluation["error"]
    assert evaluation["max_abs_diff"] <= step + 1e-5 and evaluation["agreement_with_host"] >= 0.995
    host_accuracy = metrics["device_evaluation"]["host_accuracy"]
    assert abs(evaluation["top1_accuracy"] - host_accuracy) <= 1 / 200 + 1e-9  # at most one image of 200
    assert evalset.flags(evaluation, metrics["device_evaluation"]["reference_scale"]) == []

    # Separately, this host's optimised kernels against the semantics, as the manifest records them on 1,000 images:
    # on the VNNI x86 at most one output step apart with the same top-1; on an emulated AVX2-only x86 (qemu -cpu
    # Haswell) up to 3.8 apart, 96.4% top-1 agreement, mean cosine 0.997. Bounded loosely, never asserted equal.
    kernels_out = _session(model, semantics=False).run(None, {"input": fixed})[0].ravel().astype(np.float64)
    print(f"host kernels vs semantics, fixed input: {np.abs(kernels_out - semantics_out).max() / step:.1f} output steps")
    recorded = metrics["evaluation"]["host_kernels"]["vs_semantics"]
    assert recorded["samples"] == 1000 and recorded["finite"]
    assert recorded["top1_agreement"] >= 0.9 and recorded["mean_cosine"] >= 0.99
    if recorded["max_abs_error"] > 1e-4:  # this host's kernels deviate: the summary says so, with both accuracies
        assert any("INT8 kernels give" in note for note in report.notes), report.notes


def test_litert_for_arm64_runs_on_emulated_pi_torch_free(
    arm64_python: str, tmp_path: Path, data_root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Pi's torch-free fast path: FP32 and INT8 .tflite built for arm64, run by ai-edge-litert (XNNPACK) in the
    arm64 agent image, whose outputs on the evaluation set match the host's."""
    monkeypatch.setenv("EDGE_OPT_CACHE_DIR", str(cache_dir))
    config = parse_config(
        {
            "target": "arm64",
            "precisions": ["fp32", "int8"],
            "formats": ["litert"],
            "data": {"root": str(data_root), "download": False, "eval_samples": 1000},
            "export": {"device_eval_samples": 200},
            "benchmark": {"iterations": 3, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
        }
    )
    report = run_export(config, tmp_path / "art")
    artifacts = {r.precision.value: r.path for r in report.rows if r.path is not None}
    assert set(artifacts) == {"fp32", "int8"}, report.refused
    token = tmp_path / "token"
    token.write_text(TOKEN)
    agent = AgentProcess(tmp_path / "store", token, python=arm64_python, env={"PYTHONPATH": ""})
    results = {}
    try:
        port = agent.start(timeout=120)
        with client_for(port, timeout=120) as client:
            info = client.info()
            assert info["arch"] == "aarch64"
            runtimes = {r["name"] for r in info["runtimes"]}
            assert "ai-edge-litert" in runtimes and "torch" not in runtimes, runtimes
            settings = {
                "iterations": 3, "min_seconds": 0.01, "warmup_runs": 1, "warmup_min_seconds": 0.01, "timeout_seconds": 600,
            }  # fmt: skip
            for precision, artifact in artifacts.items():
                pushed = client.push(artifact)
                eval_shas = evalset.push_eval_sets(client, artifact)
                results[precision] = list(client.bench(pushed.sha256, settings, **eval_shas))[-1]
    finally:
        agent.close()
    for precision, last in results.items():
        assert last["state"] == "RUN_STATE_SUCCEEDED", (precision, last)
        evaluation = last["result"]["evaluation"]
        record = json.loads((artifacts[precision] / "manifest.json").read_text())["host_metrics"]["device_evaluation"]
        assert evaluation["samples"] == 200 and not evaluation["error"], evaluation
        # FP32: the same float computation, rounding apart. INT8: XNNPACK's integer kernels on ARM and x86 may round a
        # tie differently, never more than a few of 200 top-1 decisions.
        assert evaluation["agreement_with_host"] >= (1.0 if precision == "fp32" else 0.98), (precision, evaluation)
        assert abs(evaluation["top1_accuracy"] - record["host_accuracy"]) <= (1 if precision == "fp32" else 4) / 200 + 1e-9
