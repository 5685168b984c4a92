"""The latency fields are named once (edge_agent.contract.latency): the proto's message, the worker's statistics and
the result dict all hold to them."""

from __future__ import annotations

import dataclasses

import pytest
from edge_agent.contract.latency import LATENCY_FIELDS, SAMPLES_FIELD, STAT_FIELDS, THROUGHPUT_FIELD, latency_record
from edge_agent.v1 import agent_pb2 as pb
from edge_agent.worker.timing import LatencyStats, summarize

pytestmark = pytest.mark.unit


def test_the_proto_message_has_the_contract_fields_in_order() -> None:
    assert tuple(f.name for f in pb.LatencyStats.DESCRIPTOR.fields) == LATENCY_FIELDS


def test_the_worker_statistics_are_the_contract_fields() -> None:
    assert tuple(f.name for f in dataclasses.fields(LatencyStats)) == (*STAT_FIELDS, SAMPLES_FIELD)


def test_a_latency_record_fills_every_field_and_fits_the_wire() -> None:
    stats = summarize([1.0, 2.0, 3.0, 4.0])
    record = latency_record(stats, 2, [1.0, 2.0])
    assert tuple(record) == LATENCY_FIELDS
    assert record["p50_ms"] == 2.5 and record[THROUGHPUT_FIELD] == 2 * 1000.0 / 2.5 and record[SAMPLES_FIELD] == [1.0, 2.0]
    message = pb.LatencyStats(**record)  # every name is the proto's
    assert message.count == 4
