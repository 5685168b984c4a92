"""The toolchain's error hierarchy.

Every error a user can cause or fix is a :class:`ToolchainError`; the CLI prints its message on one line and
exits with its ``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import ClassVar

from edge_agent.contract.result import EXIT_DATA, EXIT_DEVICE


class ToolchainError(Exception):
    """Base of every error the user can act on."""

    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "error"


class ConfigError(ToolchainError):
    """A config file or a command-line value is invalid."""

    exit_code = 2
    code = "config"


class DataError(ToolchainError):
    """The dataset cannot be found, downloaded or read."""

    exit_code = EXIT_DATA
    code = "data"


class ModelError(ToolchainError):
    """A model cannot be built or its weights cannot be loaded."""

    exit_code = 4
    code = "model"


class QuantizeError(ToolchainError):
    """Quantization cannot run as asked (for example a backend this torch build lacks)."""

    exit_code = 5
    code = "quantize"


class ExportError(ToolchainError):
    """An artifact failed to export or failed validation against its source model."""

    exit_code = 6
    code = "export"


class DeviceError(ToolchainError):
    """A device agent could not be reached or refused a request."""

    exit_code = EXIT_DEVICE
    code = "device"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run to pages), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no message"
