"""The agent's error hierarchy; :mod:`edge_agent.service.servicer` maps each class to one gRPC status code."""

from __future__ import annotations

#: What a worker's error says when it outgrew its address-space limit (Python, C++, glibc, ONNX Runtime's arena).
OUT_OF_MEMORY_MARKERS = (
    "MemoryError",
    "bad_alloc",
    "failed to map segment",
    "Cannot allocate memory",
    "Failed to allocate memory",
    "BFCArena::AllocateRawInternal",
)


class AgentError(Exception):
    """Base of every error a client can cause; its message is safe to return (no paths, no secrets)."""


class ArtifactRejected(AgentError):
    """A malformed push header, manifest, chunk or artifact (INVALID_ARGUMENT)."""


class ArtifactNotFound(AgentError):
    """The device does not hold that artifact or run (NOT_FOUND)."""


class IntegrityError(AgentError):
    """The bytes received do not hash to the declared sha256 (DATA_LOSS)."""


class OffsetMismatch(AgentError):
    """A push does not start where the device's staged bytes end (FAILED_PRECONDITION)."""


class QuotaExceeded(AgentError):
    """Size, quota, disk space or queue limits (RESOURCE_EXHAUSTED)."""


class InvalidSettings(AgentError):
    """Benchmark settings out of bounds (INVALID_ARGUMENT)."""


class RuntimeUnavailable(AgentError):
    """The artifact's runtime is not installed on this device (FAILED_PRECONDITION)."""


class ShuttingDown(AgentError):
    """The agent is stopping; the client should retry elsewhere or later (UNAVAILABLE)."""


class IdleStream(AgentError):
    """A client stream sent nothing for the idle timeout (DEADLINE_EXCEEDED)."""


class StoreLocked(Exception):
    """Another agent holds the store (not a client error: the daemon refuses to start)."""
