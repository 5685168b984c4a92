"""The pick on a real agent (a subprocess on 127.0.0.1): interleaved rounds, budget, skip, the recommended entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import FAST, AgentProcess, client_for, tiny_onnx_bytes, write_artifact
from edge_opt.device_pick import pick_on_device

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


def test_pick_on_device_names_the_fastest_within_budget(tmp_path: Path, token_file: Path, tiny_pte) -> None:
    # setup: three ONNX candidates (a wide one is much slower; a narrow one is fastest but 10 points less accurate)
    # and a real .pte (run by the device's ExecuTorch runtime) that is over the accuracy budget
    out = tmp_path / "art"
    small = write_artifact(out / "small-onnx", tiny_onnx_bytes(16), accuracy=0.90)
    big = write_artifact(out / "big-onnx", tiny_onnx_bytes(2048), accuracy=0.905)
    lossy = write_artifact(out / "lossy-onnx", tiny_onnx_bytes(4), accuracy=0.80)
    # a candidate whose runs fail on the device (a reshape to 783 columns of a 784-pixel image): left out, named
    broken_bytes = tiny_onnx_bytes(8).replace((784).to_bytes(8, "little", signed=True), (783).to_bytes(8, "little", signed=True))
    broken = write_artifact(out / "broken-onnx", broken_bytes, accuracy=0.95)
    pte = write_artifact(out / "tiny-executorch", tiny_pte[0].read_bytes(), fmt="executorch", input_shape=[1, 1, 28, 28])
    manifest = json.loads((pte / "manifest.json").read_text())
    manifest.update(host_metrics={"accuracy": 0.85}, model={"name": "tiny"})
    (pte / "manifest.json").write_text(json.dumps(manifest))
    rounds_seen = []
    # execute
    with AgentProcess(tmp_path / "store", token_file) as agent, client_for(agent.port) as client:
        data = pick_on_device(
            client,
            [big, small, lossy, pte, broken],
            out,
            reference_accuracy=0.905,
            rounds=2,
            settings=FAST,
            on_round=lambda r, n: rounds_seen.append((r, n)),
        )
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
    assert list(data["failed"]) == ["broken-onnx"] and data["failed"]["broken-onnx"].startswith("its run ended FAILED")
    assert "broken-onnx" not in verdicts
    assert rounds_seen == [(1, 2), (2, 2)]
    link = out / "recommended"
    assert link.is_symlink() and link.resolve() == small.resolve()
    evidence = json.loads((out / "recommended.json").read_text())
    assert evidence["winner"] == "small-onnx" and evidence["rounds"] == 2
    assert {c["name"] for c in evidence["candidates"]} == {"small-onnx", "big-onnx", "lossy-onnx", "tiny-executorch"}
    assert set(evidence["failed"]) == {"broken-onnx"}


@pytest.mark.slow
@pytest.mark.cpus
def test_edge_export_pick_measures_the_accuracy_budget_on_the_device(
    tmp_path: Path, token_file: Path, cli_env: dict[str, str]
) -> None:
    from conftest import parse_json_result, run_cli

    with AgentProcess(tmp_path / "store", token_file) as agent:
        args = ["--target", "host", "--precision", "fp32,int8", "--format", "onnx", "--eval-samples", "1000"]
        args += ["--out", str(tmp_path / "art"), "--push", f"127.0.0.1:{agent.port}", "--token-file", str(token_file)]
        proc = run_cli([*args, "--pick", "--pick-rounds", "2", "--device-iterations", "5", "--json", "-q"], cli_env)
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
