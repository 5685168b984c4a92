from __future__ import annotations

import random
from pathlib import Path

import pytest
from edge_opt.errors import ConfigError
from edge_opt.fleet.inventory import load_inventory
from edge_opt.fleet.stats import compare_run, median_ci, outlier_devices
from edge_opt.fleet.store import database_url, json_safe

pytestmark = pytest.mark.unit


def test_median_ci_brackets_the_median_and_narrows_with_n() -> None:
    rng = random.Random(0)
    small = [rng.gauss(10, 1) for _ in range(30)]
    large = [rng.gauss(10, 1) for _ in range(3000)]
    lo_s, mid_s, hi_s = median_ci(small)
    lo_l, mid_l, hi_l = median_ci(large)
    assert lo_s <= mid_s <= hi_s and lo_l <= mid_l <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert 9.9 < mid_l < 10.1


def _run(center: float, n: int = 200, seed: int = 0) -> dict:
    rng = random.Random(seed)
    samples = [rng.gauss(center, center * 0.02) for _ in range(n)]
    return {"samples_ms": samples, "p50_ms": sorted(samples)[n // 2]}


def test_compare_rule() -> None:
    assert compare_run(_run(1.0), _run(1.3, seed=1))[0] == "regression"
    assert compare_run(_run(1.0), _run(0.7, seed=1))[0] == "improvement"
    assert compare_run(_run(1.0), _run(1.01, seed=1))[0] == "same"  # below the minimum effect
    assert compare_run(_run(1.0, n=3), _run(1.08, n=3, seed=1))[0] == "same"  # too few samples to tell
    no_samples = compare_run({"p50_ms": 1.0}, {"p50_ms": 1.2})
    assert no_samples[0] == "regression" and no_samples[1] == pytest.approx(0.2)


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
