from __future__ import annotations

import json
import math

import pytest
from edge_agent.contract.result import EXIT_PARTIAL, EXIT_REGRESSION, envelope, json_text

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


def test_the_envelope_is_strict_json_whatever_numbers_it_holds() -> None:
    # a device without a temperature sensor reports NaN; a model's outputs can be infinite
    data = [{"state_before": {"temperature_c": math.nan}, "output_sample": [1.5, -math.inf, math.inf]}]
    text = json_text(envelope("bench", data, [], 0))

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    parsed = json.loads(text, parse_constant=refuse)
    assert parsed["data"] == [{"state_before": {"temperature_c": None}, "output_sample": [1.5, None, None]}]
