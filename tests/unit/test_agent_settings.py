from __future__ import annotations

import math

import pytest
from edge_agent.contract.errors import InvalidSettings
from edge_agent.contract.settings import BenchmarkSettings
from edge_agent.v1 import agent_pb2 as pb

pytestmark = pytest.mark.unit


def test_unset_takes_defaults_and_zero_is_a_value() -> None:
    message = pb.BenchmarkSettings(min_seconds=0.0, warmup_runs=0)
    settings = BenchmarkSettings.from_proto(message, cpu_count=2)
    assert settings.min_seconds == 0.0 and settings.warmup_runs == 0
    assert settings.iterations == 100 and settings.warmup_min_seconds == 0.5 and settings.timeout_seconds == 600.0


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("min_seconds", math.nan, "finite"),
        ("min_seconds", math.inf, "finite"),
        ("timeout_seconds", -math.inf, "finite"),
        ("iterations", 0, "out of bounds: allowed 1..1e\\+06"),
        ("batch_size", 10**6, "out of bounds"),
        ("threads", 3, "allowed 1..2"),
        ("warmup_min_seconds", 1e308, "out of bounds"),
    ],
)
def test_bad_values_are_refused_naming_the_field_and_bounds(field: str, value: float, match: str) -> None:
    message = pb.BenchmarkSettings(**{field: value})
    with pytest.raises(InvalidSettings, match=f"{field}.*{match}"):
        BenchmarkSettings.from_proto(message, cpu_count=2)


def test_mapping_refuses_fractions_for_counts_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(InvalidSettings, match="whole number"):
        BenchmarkSettings.from_mapping({"iterations": 10.5})
    with pytest.raises(InvalidSettings, match="unknown benchmark setting"):
        BenchmarkSettings.from_mapping({"iteratoins": 10})
    with pytest.raises(InvalidSettings, match="must be a number"):
        BenchmarkSettings.from_mapping({"iterations": "10"})
    with pytest.raises(InvalidSettings, match="runtime"):
        BenchmarkSettings.from_mapping({"runtime": "RUNTIME_TENSORFLOW"})


def test_unknown_enum_number_is_refused() -> None:
    message = pb.BenchmarkSettings()
    message.runtime = 99  # proto3 keeps unknown enum numbers
    with pytest.raises(InvalidSettings, match="unknown value 99"):
        BenchmarkSettings.from_proto(message)


def test_legacy_minus_one_warmup_means_none() -> None:
    assert BenchmarkSettings.from_mapping({"warmup_runs": -1}).warmup_runs == 0
