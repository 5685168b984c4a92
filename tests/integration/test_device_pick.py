"""The pick on a real agent (a subprocess on 127.0.0.1): interleaved rounds, budget, skip, the recommended entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from agent_helpers import FAST, TOKEN, AgentProcess, client_for, tiny_onnx_bytes, write_artifact
from edge_opt.device_pick import pick_on_device
from edge_opt.executorch_export import export_pte
from edge_test_models import tiny

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


def test_pick_on_device_names_the_fastest_within_budget(tmp_path: Path) -> None:
    # setup: three ONNX candidates (a wide one is much slower; a narrow one is fastest but 10 points less accurate)
    # and a real .pte (run by the device's ExecuTorch runtime) that is over the accuracy budget
    out = tmp_path / "art"
    small = write_artifact(out / "small-onnx", tiny_onnx_bytes(16), accuracy=0.90)
    big = write_artifact(out / "big-onnx", tiny_onnx_bytes(2048), accuracy=0.905)
    lossy = write_artifact(out / "lossy-onnx", tiny_onnx_bytes(4), accuracy=0.80)
    program = tmp_path / "model.pte"
    export_pte(tiny().eval(), torch.randn(1, 1, 28, 28), program, max_batch=1)
    pte = write_artifact(out / "tiny-executorch", program.read_bytes(), fmt="executorch", input_shape=[1, 1, 28, 28])
    manifest = json.loads((pte / "manifest.json").read_text())
    manifest.update(host_metrics={"accuracy": 0.85}, model={"name": "tiny"})
    (pte / "manifest.json").write_text(json.dumps(manifest))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    agent = AgentProcess(tmp_path / "store", token)
    rounds_seen = []
    try:
        port = agent.start()
        # execute
        with client_for(port) as client:
            data = pick_on_device(
                client,
                [big, small, lossy, pte],
                out,
                reference_accuracy=0.905,
                rounds=2,
                settings=FAST,
                on_round=lambda r, n: rounds_seen.append((r, n)),
            )
    finally:
        agent.close()
    # assert
    verdicts = {c["name"]: c for c in data["pick"]["candidates"]}
    assert data["pick"]["winner"] == "small-onnx"
    assert verdicts["lossy-onnx"]["status"] == "over budget"
    assert verdicts["big-onnx"]["status"] == "slower"
    assert verdicts["small-onnx"]["samples"] >= 2 * FAST["iterations"]  # every round's raw samples kept
    lo, hi = verdicts["small-onnx"]["p50_interval_ms"]
    assert lo <= verdicts["small-onnx"]["p50_ms"] <= hi
    assert verdicts["tiny-executorch"]["status"] == "over budget" and verdicts["tiny-executorch"]["samples"] > 0
    assert data["skipped"] == {}
    assert rounds_seen == [(1, 2), (2, 2)]
    link = out / "recommended"
    assert link.is_symlink() and link.resolve() == small.resolve()
    evidence = json.loads((out / "recommended.json").read_text())
    assert evidence["winner"] == "small-onnx" and evidence["rounds"] == 2
    assert {c["name"] for c in evidence["candidates"]} == {"small-onnx", "big-onnx", "lossy-onnx", "tiny-executorch"}


@pytest.mark.slow
def test_edge_export_pick_measures_the_accuracy_budget_on_the_device(tmp_path: Path, cli_env: dict[str, str]) -> None:
    from conftest import parse_json_result, run_cli

    token = tmp_path / "token"
    token.write_text(TOKEN)
    agent = AgentProcess(tmp_path / "store", token)
    try:
        port = agent.start()
        args = ["--target", "host", "--precision", "fp32,int8", "--format", "onnx", "--eval-samples", "1000"]
        args += ["--out", str(tmp_path / "art"), "--push", f"127.0.0.1:{port}", "--token-file", str(token)]
        proc = run_cli([*args, "--pick", "--pick-rounds", "2", "--device-iterations", "5", "--json", "-q"], cli_env)
    finally:
        agent.close()
    assert proc.returncode == 0, proc.stderr
    result = parse_json_result(proc.stdout)
    candidates = {c["name"]: c for c in result["data"]["pick"]["pick"]["candidates"]}
    assert set(candidates) == {"smallcnn-fp32-onnx", "smallcnn-int8-onnx"}
    for name, candidate in candidates.items():
        # The device evaluated each candidate on the export's evaluation set; the budget uses those figures.
        assert candidate["accuracy_source"] == "device", candidate
        manifest = json.loads((tmp_path / "art" / name / "manifest.json").read_text())
        host_on_same_images = manifest["host_metrics"]["device_evaluation"]["host_accuracy"]
        assert candidate["accuracy"] == pytest.approx(host_on_same_images, abs=1e-9)  # the device is this host
    winner = result["data"]["pick"]["pick"]["winner"]
    assert winner in candidates
    assert (tmp_path / "art" / "recommended").resolve() == (tmp_path / "art" / winner).resolve()
