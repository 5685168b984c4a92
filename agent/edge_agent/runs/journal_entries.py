"""One line of the results journal: its schema, its checksum and how it stores latency samples.

A line is ``{"seq": n, "run_id": ..., "event": "accepted" | "started" | "finished" | "record", "ts": ..., ...,
"sum": <sha256 of the rest, 16 hex>}``. :func:`decode_entry` type-checks every field the agent later reads, so a
record that passes can always be served (:func:`edge_agent.contract.wire.check_servable`); :mod:`edge_agent.runs.journal`
keeps the file these lines make up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from edge_agent.contract.formats import MODEL_FORMATS
from edge_agent.contract.latency import SAMPLES_FIELD
from edge_agent.contract.patterns import RUN_ID_PATTERN, SHA256_PATTERN
from edge_agent.contract.settings import BenchmarkSettings
from edge_agent.contract.wire import check_servable

TERMINAL_STATES: Final = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "INTERRUPTED"})
EVENTS: Final = frozenset({"accepted", "started", "finished", "record"})
#: Every state a run record can be in (``record`` entries snapshot unfinished runs too).
STATES: Final = TERMINAL_STATES | {"QUEUED", "RUNNING"}
#: The runtimes a run can name: one per artifact format (edge_agent.contract.formats).
RUNTIMES: Final = frozenset(f.runtime for f in MODEL_FORMATS.values())
_SUM_KEY: Final = "sum"
#: Sequence numbers stay below 2**53 (exact in JSON doubles and in the proto's int64).
MAX_SEQ: Final = 1 << 53
_RUN_ID: Final = RUN_ID_PATTERN
_SHA256: Final = SHA256_PATTERN
#: What the run manager records beside the benchmark settings: the evaluation sets of the run (or "").
_RECORDED_EXTRAS: Final = ("eval_set_sha256", "eval_reference_sha256")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _checksum(entry: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in entry.items() if k != _SUM_KEY}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def encode_entry(entry: dict[str, Any]) -> bytes:
    """One journal line: the entry with its checksum."""
    return json.dumps({**entry, _SUM_KEY: _checksum(entry)}, separators=(",", ":")).encode() + b"\n"


def decode_entry(line: bytes, *, require_sum: bool = True) -> dict[str, Any]:
    """Parse and check one line; raises ValueError saying what is wrong with it.

    Every field the agent later reads is type-checked here, so a record that passes can always be served.
    ``require_sum=False`` only for a journal written before records carried checksums (none of its lines has one).
    """
    if not line.endswith(b"\n"):
        raise ValueError("torn line (no newline: the write never completed)")
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    if _SUM_KEY in entry:
        if entry[_SUM_KEY] != _checksum(entry):
            raise ValueError("checksum mismatch")
    elif require_sum:
        raise ValueError("no checksum")
    seq, run_id, event, ts = entry.get("seq"), entry.get("run_id"), entry.get("event"), entry.get("ts")
    if not (type(seq) is int and 0 < seq < MAX_SEQ and isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
        raise ValueError("not a journal entry (seq, run_id)")
    if event not in EVENTS or not isinstance(ts, str):
        raise ValueError("not a journal entry (event, ts)")
    if event in ("accepted", "record"):
        _check_accepted(entry)
    if event == "finished" or (event == "record" and entry.get("state") in TERMINAL_STATES):
        _check_finished(entry)
    if event == "record" and not (
        entry.get("state") in STATES and isinstance(entry.get("accepted_at"), str) and isinstance(entry.get("finished_at"), str)
    ):
        raise ValueError("record entry without a state and times")
    return entry


def _check_accepted(entry: dict[str, Any]) -> None:
    if not (isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])):
        raise ValueError("accepted entry without a sha256")
    settings = entry.get("settings")
    if not isinstance(settings, dict) or settings.get("runtime") not in RUNTIMES:
        raise ValueError("accepted entry without valid settings")
    for key in _RECORDED_EXTRAS:
        if not (settings.get(key, "") == "" or (isinstance(settings[key], str) and _SHA256.fullmatch(settings[key]))):
            raise ValueError(f"accepted entry with an invalid {key}")
    try:
        BenchmarkSettings.from_mapping({k: v for k, v in settings.items() if k != "runtime" and k not in _RECORDED_EXTRAS})
    except Exception as exc:  # InvalidSettings: any bad value makes the record unservable
        raise ValueError(f"accepted entry with invalid settings ({exc})") from None


def _check_finished(entry: dict[str, Any]) -> None:
    if entry.get("state") not in TERMINAL_STATES:
        raise ValueError("finished entry without a terminal state")
    error, result = entry.get("error"), entry.get("result")
    if error is not None and not (
        isinstance(error, dict) and all(isinstance(error.get(k, ""), str) for k in ("code", "message"))
    ):
        raise ValueError("finished entry with a malformed error")
    if result is not None:
        latency = result.get("latency", {}) if isinstance(result, dict) else None
        if not isinstance(latency, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for k, v in latency.items() if k != SAMPLES_FIELD
        ):
            raise ValueError("finished entry with a malformed result")
        if SAMPLES_FIELD in latency:
            decode_samples(latency[SAMPLES_FIELD])
        check_servable(result)


#: How a line stores latency samples: packed little-endian doubles in base64 (a third of the text of a JSON list,
#: and encoded or parsed at memory speed); lists, as older lines hold them, are read too.
_SAMPLES_KEY: Final = "f64le_base64"


def decode_samples(value: Any) -> array:
    """A line's ``samples_ms`` as packed doubles; raises ValueError for anything else."""
    if isinstance(value, list):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise ValueError("latency samples that are not numbers")
        return array("d", value)
    if isinstance(value, dict) and set(value) == {_SAMPLES_KEY} and isinstance(value[_SAMPLES_KEY], str):
        try:
            raw = base64.b64decode(value[_SAMPLES_KEY], validate=True)
        except ValueError:
            raise ValueError("latency samples that are not base64") from None
        if len(raw) % 8:
            raise ValueError("latency samples of a length that is not whole doubles")
        samples = array("d")
        samples.frombytes(raw)
        if sys.byteorder == "big":
            samples.byteswap()
        return samples
    raise ValueError("latency samples of an unknown form")


def encode_samples(samples: Any) -> dict[str, str]:
    packed = array("d", samples)
    if sys.byteorder == "big":
        packed.byteswap()
    return {_SAMPLES_KEY: base64.b64encode(packed.tobytes()).decode("ascii")}


def with_samples(result: dict[str, Any] | None, convert: Callable[[Any], Any]) -> dict[str, Any] | None:
    """``result`` with its latency samples converted (a new dict; the caller's is left as it is)."""
    latency = (result or {}).get("latency")
    if not isinstance(latency, dict) or SAMPLES_FIELD not in latency:
        return result
    return {**(result or {}), "latency": {**latency, SAMPLES_FIELD: convert(latency[SAMPLES_FIELD])}}
