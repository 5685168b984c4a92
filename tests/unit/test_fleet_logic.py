from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from edge_opt.errors import ConfigError
from edge_opt.fleet.inventory import load_inventory
from edge_opt.fleet.outliers import outlier_devices
from edge_opt.fleet.store import database_url, json_safe

pytestmark = pytest.mark.unit


def _store(tmp_path: Path, history: dict[str, list[float]], candidate: dict[str, float], disturbed: tuple[str, ...] = ()) -> str:
    """A results store in which each device ran artifact ``a`` once per past collection (``h00``, ``h01``, ...;
    the last is the baseline) and once in collection ``new``: the medians given."""
    from edge_opt.fleet.store import open_store

    db = str(tmp_path / "results.sqlite")
    manifest = {"precision": "fp32", "format": "onnx", "model": {"name": "tiny"}, "host_metrics": {"accuracy": 0.9},
                "file": {"sha256": "a" * 64, "size_bytes": 1000}}
    settings = {"threads": 1, "batch_size": 1, "keep_samples": True}
    rounds = max(len(v) for v in history.values())
    results = open_store(db)
    results.record_artifact(manifest, "a-onnx")
    for device in history:
        results.record_device(device, "127.0.0.1:1", [], {"cpu_model": device})
    for i in range(rounds + 1):
        name = f"h{i:02d}" if i < rounds else "new"
        results.record_collection(name, settings)
        for device, values in history.items():
            first = rounds - len(values)  # a shorter history fills the latest past collections
            if name != "new" and i < first:
                continue
            p50 = candidate[device] if name == "new" else values[i - first]
            busy = name == "new" and device in disturbed
            run = {"run_id": f"{name}-{device}", "sha256": "a" * 64, "state": "SUCCEEDED",
                   "result": {"latency": {"p50_ms": p50}, "disturbed": busy}}
            results.record_run(name, device, run, settings, {"cpu_model": device})
    return db


def _fleet(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from edge_opt.fleet.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_threshold_from_the_devices_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # setup: a quiet device with a long history, a noisy one, and one with no history (baseline only)
    rng = random.Random(0)
    history = {
        "quiet": [rng.gauss(1.0, 0.004) for _ in range(20)],
        "noisy": [rng.lognormvariate(0.0, 0.15) for _ in range(20)],
        "fresh": [1.0],
    }
    baseline = {d: v[-1] for d, v in history.items()}
    db = _store(tmp_path, history, {"quiet": baseline["quiet"] * 1.03, "noisy": baseline["noisy"] * 1.2,
                                    "fresh": 1.06}, disturbed=("fresh",))
    # execute
    code, out, _ = _fleet(["compare", "h19", "new", "--db", db, "--json"], capsys)
    # assert: 3% is a regression on the quiet device, 20% is within the noisy one's noise, 6% beyond the default 5%
    data = json.loads(out)["data"]
    verdicts = {v["device"]: v for v in data["verdicts"]}
    assert code == 9 and data["regressions"] == 2
    assert verdicts["quiet"]["verdict"] == "regression" and verdicts["quiet"]["threshold_basis"] == "history: tightened"
    assert verdicts["quiet"]["threshold"] < 0.03 and verdicts["quiet"]["history_runs"] == 20
    assert verdicts["noisy"]["verdict"] == "same" and verdicts["noisy"]["threshold_basis"] == "history: widened"
    assert verdicts["fresh"]["verdict"] == "regression" and verdicts["fresh"]["threshold_basis"] == "default"
    assert verdicts["fresh"]["disturbed"] == ["candidate"] and data["disturbed"] == 1
    assert data["thresholds"] == {"default": 1, "history: tightened": 1, "history: widened": 1}
    # the table says which threshold each row used
    code, out, _ = _fleet(["compare", "h19", "new", "--db", db], capsys)
    assert "(history: tighter)" in out and "(history: wider)" in out and "disturbed candidate run" in out
    assert "1 tightened and 1 widened by the device's history" in out
    # --no-history: --min-effect everywhere
    code, out, _ = _fleet(["compare", "h19", "new", "--db", db, "--json", "--no-history"], capsys)
    assert {v["device"]: v["verdict"] for v in json.loads(out)["data"]["verdicts"]}["noisy"] == "regression"


def test_quiet_and_verbose_in_any_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _store(tmp_path, {"quiet": [1.0] * 6, "steady": [1.0] * 6}, {"quiet": 1.5, "steady": 1.0})
    code, loud, _ = _fleet(["compare", "h05", "new", "--db", db], capsys)
    assert code == 9 and "steady" in loud and "quiet" in loud and "thresholds:" in loud
    for argv in (["-q", "compare", "h05", "new", "--db", db], ["compare", "h05", "new", "--db", db, "-q"]):
        code, out, _ = _fleet(argv, capsys)
        assert code == 9 and "quiet" in out and "steady" not in out and "thresholds:" not in out  # regressions only
    # -v: a usage mistake shows its traceback, before or after the command
    code, _, err = _fleet(["compare", "h05", "nope", "--db", db], capsys)
    assert code == 2 and "no collection 'nope'" in err and "Traceback" not in err
    for argv in (["-v", "compare", "h05", "nope", "--db", db], ["compare", "h05", "nope", "--db", db, "-v"]):
        code, _, err = _fleet(argv, capsys)
        assert code == 2 and "Traceback" in err and "no collection 'nope'" in err


def test_outlier_devices_are_compared_with_their_peers() -> None:
    pi = {"cpu_model": "ARM Cortex-A72", "board_model": "Raspberry Pi 4"}
    x86 = {"cpu_model": "Xeon", "board_model": ""}
    rows = [
        {"device": d, "sha256": s, "p50_ms": v, "device_info": info}
        for d, info, factor in (
            ("pi-1", pi, 1.0),
            ("pi-2", pi, 1.05),
            ("pi-3", pi, 2.4),
            ("nuc-1", x86, 0.1),
            ("nuc-2", x86, 0.1),
        )
        for s, base in (("a", 10.0), ("b", 20.0))
        for v in (base * factor,)
    ]
    assert set(outlier_devices(rows)) == {"pi-3"}  # the x86 boxes are fast, but not compared with the Pis


def test_inventory_defaults_selection_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "defaults: {token_file: ~/t}\n"
        "devices:\n"
        "  - {name: a, address: 'h1:1', tags: [pi]}\n"
        "  - {name: b, address: 'h2:2', tags: [x86], token_file: /other}\n"
    )
    inventory = load_inventory(path)
    devices = {d.name: d for d in inventory.resolved()}
    assert devices["a"].token_file == Path("~/t").expanduser() and devices["b"].token_file == Path("/other")
    assert [d.name for d in inventory.select(tags=["x86"])] == ["b"]
    assert [d.name for d in inventory.select(names=["a"], tags=["x86"])] == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown device"):
        inventory.select(names=["zz"])
    path.write_text("devices:\n  - {name: a, address: 'h1:1'}\n  - {name: a, address: 'h2:2'}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_inventory(path)
    path.write_text("devices:\n  - {name: a, address: 'no-port'}\n")
    with pytest.raises(ConfigError, match="address"):
        load_inventory(path)


def test_database_urls_and_json_safety(tmp_path: Path) -> None:
    assert database_url(str(tmp_path / "r.sqlite")) == f"sqlite:///{tmp_path / 'r.sqlite'}"
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert json_safe({"t": float("nan"), "l": [1.0, float("inf")]}) == {"t": None, "l": [1.0, None]}


def test_a_collection_keeps_the_settings_digest_of_earlier_versions() -> None:
    # Run ids hash the settings: with the flags left unset, a collection must hash as collections always have
    # (every default spelled out), or a collection begun earlier would be benchmarked all over again.
    from edge_opt.fleet.cli import build_parser, collection_settings
    from edge_opt.fleet.collect import settings_digest

    earlier = {
        "iterations": 100,
        "min_seconds": 1.0,
        "warmup_runs": 10,
        "threads": 1,
        "batch_size": 1,
        "timeout_seconds": 600.0,
        "keep_samples": True,
    }
    args = build_parser().parse_args(["bench", "--inventory", "fleet.yaml", "art"])
    assert settings_digest(collection_settings(args)) == settings_digest(earlier)
    faster = build_parser().parse_args(["bench", "--inventory", "fleet.yaml", "art", "--iterations", "30"])
    assert collection_settings(faster)["iterations"] == 30
