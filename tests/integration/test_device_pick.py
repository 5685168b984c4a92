"""The pick on a real agent (a subprocess on 127.0.0.1): rounds in fresh workers, budget, skip, the recommended entry,
and the same pick twice naming the same winner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import FAST, AgentProcess, client_for, tiny_onnx_bytes, write_artifact
from edge_opt.device.pick_runs import pick_on_device

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
            rounds=3,
            max_rounds=3,
            settings=FAST,
            on_round=lambda r, message: rounds_seen.append(r),
        )
    # assert
    verdicts = {c["name"]: c for c in data["pick"]["candidates"]}
    assert data["pick"]["winner"] == "small-onnx"
    assert verdicts["lossy-onnx"]["status"] == "over budget"
    assert verdicts["big-onnx"]["status"] in ("slower", "tie")  # slower and larger: never the winner
    small_onnx = verdicts["small-onnx"]
    assert small_onnx["rounds"] + small_onnx["rounds_excluded"] == 3 and small_onnx["calls"] >= FAST["iterations"]
    lo, hi = small_onnx["interval_ms"]
    assert lo <= small_onnx["p50_ms"] <= hi and small_onnx["interval_method"] and small_onnx["interval_width"] > 0
    assert verdicts["tiny-executorch"]["status"] == "over budget" and verdicts["tiny-executorch"]["rounds"] > 0
    assert data["skipped"] == {}
    assert list(data["failed"]) == ["broken-onnx"] and data["failed"]["broken-onnx"].startswith("its run ended FAILED")
    assert "broken-onnx" not in verdicts
    assert rounds_seen == [1, 2, 3] and data["rounds"] == 3 and data["stop"]["text"]
    link = out / "recommended"
    assert link.is_symlink() and link.resolve() == small.resolve()
    evidence = json.loads((out / "recommended.json").read_text())
    assert evidence["winner"] == "small-onnx" and evidence["rounds"] == 3 and evidence["stop"] == data["stop"]
    assert set(evidence["round_log"]) == {"small-onnx", "big-onnx", "lossy-onnx", "tiny-executorch"}
    assert {c["name"] for c in evidence["candidates"]} == {"small-onnx", "big-onnx", "lossy-onnx", "tiny-executorch"}
    assert set(evidence["failed"]) == {"broken-onnx"}


def test_the_same_pick_twice_names_the_same_winner(tmp_path: Path, token_file: Path) -> None:
    # setup: two nearly equal candidates (a tie, or a separation in favour of the smaller) and a much slower one
    out = tmp_path / "art"
    folders = [
        write_artifact(out / "narrow-onnx", tiny_onnx_bytes(16), accuracy=0.90),
        write_artifact(out / "narrow-too-onnx", tiny_onnx_bytes(24), accuracy=0.90),
        write_artifact(out / "wide-onnx", tiny_onnx_bytes(2048), accuracy=0.90),
    ]
    settings = {"iterations": 200, "min_seconds": 0.05, "warmup_runs": 20, "warmup_min_seconds": 0.02}
    # execute
    picks = []
    with AgentProcess(tmp_path / "store", token_file) as agent, client_for(agent.port) as client:
        for _ in range(2):
            data = pick_on_device(client, folders, out, reference_accuracy=0.90, rounds=3, max_rounds=6, max_seconds=90,
                                  settings=settings)
            picks.append(data)
    # assert: the same winner, or tie sets that hold each other's winners
    (a, b) = (p["pick"] for p in picks)
    assert a["winner"] == b["winner"] or (a["winner"] in b["tie_set"] and b["winner"] in a["tie_set"]), (a, b)
    assert a["winner"] != "wide-onnx" and b["winner"] != "wide-onnx"
    for data in picks:
        assert data["stop"]["reason"] in ("separated", "settled", "rounds", "seconds") and 3 <= data["rounds"] <= 6


@pytest.mark.slow
@pytest.mark.cpus
def test_edge_export_pick_measures_the_accuracy_budget_on_the_device(
    tmp_path: Path, token_file: Path, cli_env: dict[str, str]
) -> None:
    from conftest import parse_json_result, run_cli

    with AgentProcess(tmp_path / "store", token_file) as agent:
        args = ["--target", "host", "--precision", "fp32,int8", "--format", "onnx", "--eval-samples", "1000"]
        args += ["--out", str(tmp_path / "art"), "--push", f"127.0.0.1:{agent.port}", "--token-file", str(token_file)]
        proc = run_cli([*args, "--pick", "--pick-rounds", "2-4", "--pick-seconds", "120", "--device-iterations", "5", "--json",
                        "-q"], cli_env)
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
    pick = result["data"]["pick"]
    winner = pick["pick"]["winner"]
    assert winner in candidates and 2 <= pick["rounds"] <= 4 and pick["stop"]["text"]
    assert (tmp_path / "art" / "recommended").resolve() == (tmp_path / "art" / winner).resolve()
