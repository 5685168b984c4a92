from __future__ import annotations

import pytest
from edge_agent.result import EXIT_PARTIAL, EXIT_REGRESSION, envelope

pytestmark = pytest.mark.unit


def test_envelope_keys_are_pinned() -> None:
    ok = envelope("export", {"x": 1}, [], 0)
    err = envelope("export", None, [{"code": "config", "message": "bad"}], 2)
    # The contract, literally: consumers (the fleet collector, CI jobs) read exactly these keys.
    assert list(ok) == ["edge_result_version", "command", "status", "exit_code", "data", "errors"]
    assert (ok["status"], err["status"], ok["edge_result_version"]) == ("ok", "error", "1")
    assert envelope("fleet bench", {}, [], EXIT_PARTIAL)["status"] == "partial"
    assert envelope("fleet compare", {}, [], EXIT_REGRESSION)["status"] == "regression"
    assert (EXIT_PARTIAL, EXIT_REGRESSION) == (8, 9)
