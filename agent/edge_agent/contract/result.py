"""The versioned JSON result every edge-opt command prints with ``--json`` (edge-agent's host commands here; the
toolchain's edge-export, edge-sweep and edge-fleet through :mod:`edge_opt.cli.command`)::

    {"edge_result_version": "1", "command": "export", "status": "ok" | "error" | "partial" | "regression",
     "exit_code": 0, "data": {...}, "errors": [{"code": "config", "message": "..."}]}

``partial`` (exit 8): the command did its work but some of it failed (a device run; some devices of a fleet);
``regression`` (exit 9): ``edge-fleet compare`` found one. Both are additions a version-1 consumer reads as "not
ok", so the version stays 1. Consumers (CI, the fleet collector) read this, never the tables;
``tests/unit/test_result_contract.py`` pins it.

The envelope is printed as strict JSON (RFC 8259, :func:`json_text`): a number that is not finite (NaN for what a
device cannot measure, such as the temperature of a machine without a sensor; an infinite output of a model) is
``null``, so that any JSON parser reads it.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypedDict

RESULT_VERSION = "1"

# Exit codes of every edge-opt command (the toolchain's errors add 3 data, 4 model, 5 quantization, 6 export).
#: Success.
EXIT_OK = 0
#: A bad argument, file or setting that is not a usage mistake; the message names it.
EXIT_ERROR = 1
#: A usage mistake (flags, config): nothing was done.
EXIT_USAGE = 2
#: The data (the user's, or the built-in dataset) cannot be found, read or fed to the model.
EXIT_DATA = 3
#: The device could not be reached or refused the call (authentication, a setting it does not accept).
EXIT_DEVICE = 7
#: The command did its work but part of it failed (a benchmark run on a device, some devices of a fleet
#: unreachable): status "partial", each failure named in ``errors``.
EXIT_PARTIAL = 8
#: ``edge-fleet compare`` found at least one regression beyond the noise (a CI job can gate on it).
EXIT_REGRESSION = 9


class ResultError(TypedDict):
    code: str
    message: str


class ResultEnvelope(TypedDict):
    edge_result_version: str
    command: str
    status: str
    exit_code: int
    data: Any
    errors: list[ResultError]


def envelope(command: str, data: Any, errors: list[ResultError], exit_code: int) -> ResultEnvelope:
    status = {0: "ok", EXIT_PARTIAL: "partial", EXIT_REGRESSION: "regression"}.get(exit_code, "error")
    return {
        "edge_result_version": RESULT_VERSION,
        "command": command,
        "status": status,
        "exit_code": exit_code,
        "data": data,
        "errors": errors,
    }


def json_text(result: ResultEnvelope) -> str:
    """The envelope as strict JSON: non-finite numbers become ``null`` (Python's json would write NaN/Infinity)."""
    return strict_json(result)


def strict_json(value: Any) -> str:
    """``value`` as strict JSON (RFC 8259), indented: what every JSON file written for users holds, so that a file
    and the ``--json`` output it mirrors are equal for any JSON reader (a NaN reading becomes ``null``)."""
    return json.dumps(_finite(value), indent=2, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
