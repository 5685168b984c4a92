from __future__ import annotations

import pytest
from edge_opt.report import ResultEnvelope, envelope

pytestmark = pytest.mark.unit


def test_envelope_keys_are_pinned() -> None:
    ok = envelope("export", {"x": 1}, [], 0)
    err = envelope("export", None, [{"code": "config", "message": "bad"}], 2)
    assert set(ok) == set(ResultEnvelope.__annotations__)
    assert (ok["status"], err["status"], ok["edge_result_version"]) == ("ok", "error", "1")
