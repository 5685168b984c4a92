"""Two collectors (two hosts, in effect) writing one PostgreSQL results store at the same time."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from agent_helpers import TOKEN, AgentProcess, tiny_onnx_bytes, write_artifact
from edge_opt.fleet.cli import artifact_folders
from edge_opt.fleet.collect import Collector, load_artifacts
from edge_opt.fleet.inventory import Device
from edge_opt.fleet.store import open_store
from sqlalchemy import text

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_collectors_at_once_lose_nothing_and_record_nothing_twice(tmp_path: Path, postgres_url: str) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    agents = [AgentProcess(tmp_path / f"store-{i}", token) for i in range(3)]
    export = tmp_path / "export"
    write_artifact(export / "tiny-a-onnx", tiny_onnx_bytes(64))
    write_artifact(export / "tiny-b-onnx", tiny_onnx_bytes(128))
    artifacts = load_artifacts(artifact_folders([export]))
    collection = f"shared-{os.getpid()}-{int(time.time())}"
    settings = {"iterations": 20, "min_seconds": 0.01, "warmup_runs": 1, "keep_samples": True}
    try:
        devices = [Device(name=f"dev-{i}", address=f"127.0.0.1:{a.start()}", token_file=token) for i, a in enumerate(agents)]
        start = threading.Barrier(2)
        outcomes: dict[str, list] = {}
        errors: list[BaseException] = []

        def collect(host: str) -> None:
            collector = Collector(open_store(postgres_url), collection, settings, call_timeout=30)
            start.wait()
            try:
                outcomes[host] = collector.run(devices, artifacts)
            except BaseException as exc:  # an IntegrityError here is exactly the bug this test is about
                errors.append(exc)

        threads = [threading.Thread(target=collect, args=(host,)) for host in ("host-a", "host-b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors
        assert sorted(outcomes) == ["host-a", "host-b"], "a collector did not finish"
        for host, result in outcomes.items():
            assert all(o.complete and o.succeeded == 2 for o in result), (host, [o.__dict__ for o in result])
        with open_store(postgres_url).engine.connect() as conn:
            rows = conn.execute(
                text("SELECT device, run_id, state FROM runs WHERE collection = :c ORDER BY device, run_id"), {"c": collection}
            ).fetchall()
            collections = conn.execute(text("SELECT count(*) FROM collections WHERE name = :c"), {"c": collection}).scalar()
        assert collections == 1
        assert len(rows) == 6 and len({(d, r) for d, r, _ in rows}) == 6
        assert {state for _, _, state in rows} == {"SUCCEEDED"}
    finally:
        for agent in agents:
            agent.close()
