"""Helpers shared by the agent tests: tiny real models as artifact folders, a subprocess agent, the audit."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from edge_agent.client import AgentClient, Credentials
from edge_opt.testing import AgentProcess, tiny_onnx_bytes, write_artifact

__all__ = ["FAST", "TOKEN", "AgentProcess", "audit_store", "client_for", "tiny_onnx_bytes", "wait_for", "write_artifact"]

TOKEN = "test-token-0123456789abcdef"


def client_for(port: int, token: str | None = TOKEN, timeout: float = 30.0) -> AgentClient:
    return AgentClient(f"127.0.0.1:{port}", Credentials(token=token), timeout=timeout)


FAST = {"iterations": 5, "min_seconds": 0.01, "warmup_runs": 1, "warmup_min_seconds": 0.01}


def audit_store(store: Path, acknowledged: dict[str, bytes]) -> None:
    """The 'nothing lost' audit: acknowledged artifacts intact, no commit debris, journal gapless."""
    for sha, content in acknowledged.items():
        folder = store / "artifacts" / sha
        model = next(p for p in folder.iterdir() if p.name.startswith("model."))
        assert hashlib.sha256(model.read_bytes()).hexdigest() == sha
        assert model.read_bytes() == content
    staging = store / "staging"
    assert not [p for p in staging.iterdir() if p.name.startswith(("commit-", "delete-"))] if staging.exists() else True
    journal = store / "runs" / "journal.jsonl"
    if journal.exists():
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        accepted = {e["run_id"] for e in entries if e["event"] == "accepted"}
        finished = [e["run_id"] for e in entries if e["event"] == "finished"]
        assert sorted(finished) == sorted(set(finished)), "a run finished twice"
        assert accepted == set(finished), "an accepted run has no terminal result"


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError("condition not met in time")
