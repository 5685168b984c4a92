"""The agent on an (emulated) Raspberry Pi 4: a real aarch64 Python under qemu user-mode.

The x86 host exports SmallCNN INT8 ONNX for the arm64 target, pushes it to the emulated agent, benchmarks it
there and checks that the device's outputs match the host's for the same input. Function only, never timing:
emulation is 35-300x slower than a real Pi. ``EDGE_ARM64_PYTHON`` names the launcher made by
``scripts/arm64_python.sh`` (``.ci/run`` provisions it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from agent_helpers import TOKEN, AgentProcess, client_for
from edge_opt.config import parse_config
from edge_opt.pipeline import run_export

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def arm64_python() -> str:
    launcher = os.environ.get("EDGE_ARM64_PYTHON", "")
    if not launcher or not Path(launcher).is_file():
        message = "EDGE_ARM64_PYTHON is not set: run scripts/arm64_python.sh DIR and export its output"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return launcher


def test_int8_onnx_for_arm64_runs_on_emulated_pi_with_host_outputs(
    arm64_python: str, tmp_path: Path, data_root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_OPT_CACHE_DIR", str(cache_dir))
    config = parse_config(
        {
            "target": "arm64",
            "precisions": ["int8"],
            "formats": ["onnx"],
            "data": {"root": str(data_root), "download": False, "eval_samples": 1000},
            "benchmark": {"iterations": 3, "min_seconds": 0.0, "warmup_runs": 1, "warmup_min_seconds": 0.0, "batch_sizes": [1]},
        }
    )
    report = run_export(config, tmp_path / "art")
    artifact = next(r.path for r in report.rows if r.path is not None)
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
            settings = {
                "iterations": 3,
                "min_seconds": 0.01,
                "warmup_runs": 1,
                "warmup_min_seconds": 0.01,
                "timeout_seconds": 600,
            }
            last = list(client.bench(pushed.sha256, settings))[-1]
        assert last["state"] == "RUN_STATE_SUCCEEDED", last
        device_out = np.array(last["result"]["output_sample"], dtype=np.float64)
        # The same fixed input the worker uses, run on the host with plain onnxruntime.
        fixed = np.random.default_rng(1234).standard_normal([1, 1, 28, 28]).astype(np.float32)
        session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
        host_out = session.run(None, {"input": fixed})[0].ravel().astype(np.float64)
        assert device_out.shape == host_out.shape == (10,)
        assert np.argmax(device_out) == np.argmax(host_out)
        np.testing.assert_allclose(device_out, host_out, atol=1e-4, rtol=1e-4)
    finally:
        agent.close()
