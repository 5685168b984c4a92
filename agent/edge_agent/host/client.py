"""The host side of the wire contract: push artifacts, run benchmarks, fetch results. Needs no torch.

Every call has a deadline. A push asks the device first (one round trip when it already has the artifact) and
resumes from the bytes the device holds. A benchmark stream that drops is re-attached with the same run id,
which the device treats as idempotent, so a result is never lost and a run never runs twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_agent.contract.chunks import MAX_CHUNK_BYTES, iter_file_chunks
from edge_agent.contract.manifest import read_artifact
from edge_agent.contract.tokens import read_token
from edge_agent.v1 import agent_pb2 as pb
from edge_agent.v1 import agent_pb2_grpc

DEFAULT_TIMEOUT = 30.0
#: Per-chunk allowance on top of DEFAULT_TIMEOUT for a push (a Pi on Wi-Fi moves ~2 MB/s).
PUSH_SECONDS_PER_MIB = 2.0
#: How long a push keeps asking where to resume while the device still winds up an earlier, cut-off stream of
#: ours (it notices a silent cut by its idle timeout, 30 s by default).
PUSH_RESUME_SECONDS = 45.0
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


#: Status codes that concern the device or the connection as a whole; the others concern one request (an
#: artifact's push, one run), so a caller working through several artifacts can go on with the next.
DEVICE_WIDE = frozenset({"UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED", "DEADLINE_EXCEEDED", "CANCELLED"})


class DeviceCallError(Exception):
    """A call failed; ``code`` is the gRPC status name, the message is the device's."""

    def __init__(self, address: str, code: str, message: str) -> None:
        super().__init__(f"{address}: {code}: {message}")
        self.code = code
        self.details = message

    @property
    def device_wide(self) -> bool:
        """Whether the failure concerns the device or the connection (stop), not one request (go on)."""
        return self.code in DEVICE_WIDE


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None

    @classmethod
    def from_files(
        cls,
        token_file: Path | None = None,
        ca_cert: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        server_name: str | None = None,
        *,
        token: str | None = None,
    ) -> Credentials:
        """Credentials as the CLIs and the inventory name them: the token read from its file (it wins over ``token``).

        Raises:
            ValueError / OSError: an unreadable or too short token file.
        """
        return cls(read_token(token_file) if token_file else token, ca_cert, client_cert, client_key, server_name)


@dataclass(frozen=True)
class PushOutcome:
    sha256: str
    name: str
    already_present: bool
    bytes_sent: int
    resumed_from: int
    seconds: float


def message_to_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as plain Python: ints stay ints (protobuf's JSON form makes int64 strings), enums are
    their names, unset sub-messages and oneof members are left out, every scalar is present."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        is_message = field.type == field.TYPE_MESSAGE
        repeated = field.is_repeated
        if not repeated and (is_message or field.containing_oneof is not None) and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        out[field.name] = [_value(field, v) for v in value] if repeated else _value(field, value)
    return out


def _value(field: Any, value: Any) -> Any:
    if field.type == field.TYPE_MESSAGE:
        return message_to_dict(value)
    if field.type == field.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    return value


def _local_artifact(folder: Path) -> tuple[Path, dict[str, Any], str]:
    """The model file and manifest of an artifact folder, read through the one checked reader
    (:func:`edge_agent.contract.manifest.read_artifact`: schema version, file record, the device's own checks).

    The manifest's sha256 is the artifact's identity; the device hashes every byte it receives and refuses a
    mismatch (DATA_LOSS), so the host does not re-hash the file here: a re-push of an artifact the device has
    costs one round trip, not a pass over the file. The size is checked, which catches a truncated file.

    Raises:
        ManifestError (a ValueError): one line naming the file and what is wrong.
    """
    artifact = read_artifact(folder)
    return artifact.model, artifact.manifest, artifact.text


class AgentClient:
    def __init__(self, address: str, credentials: Credentials | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        creds = credentials or Credentials()
        options: list[tuple[str, int | str]] = list(CLIENT_OPTIONS)
        if creds.server_name:
            options.append(("grpc.ssl_target_name_override", creds.server_name))
        if creds.ca_cert or creds.client_cert:
            tls = grpc.ssl_channel_credentials(
                root_certificates=creds.ca_cert.read_bytes() if creds.ca_cert else None,
                private_key=creds.client_key.read_bytes() if creds.client_key else None,
                certificate_chain=creds.client_cert.read_bytes() if creds.client_cert else None,
            )
            self.channel = grpc.secure_channel(address, tls, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self._metadata = (("authorization", f"Bearer {creds.token}"),) if creds.token else ()
        self.stub = agent_pb2_grpc.EdgeAgentStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise DeviceCallError(self.address, exc.code().name, exc.details() or "") from None

    # ----- queries -------------------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the agent's health check says SERVING."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                reply = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.1)
        raise DeviceCallError(self.address, "UNAVAILABLE", f"agent not serving after {timeout:g} s ({last})")

    def info(self) -> dict[str, Any]:
        return message_to_dict(self._call(self.stub.GetDeviceInfo, pb.GetDeviceInfoRequest()))

    def list_artifacts(self) -> list[dict[str, Any]]:
        return [message_to_dict(a) for a in self._call(self.stub.ListArtifacts, pb.ListArtifactsRequest()).artifacts]

    def delete(self, sha256: str) -> bool:
        return bool(self._call(self.stub.DeleteArtifact, pb.DeleteArtifactRequest(sha256=sha256)).deleted)

    def get_run(self, run_id: str) -> dict[str, Any]:
        return message_to_dict(self._call(self.stub.GetRun, pb.GetRunRequest(run_id=run_id)))

    def list_runs(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        reply = self._call(self.stub.ListRuns, pb.ListRunsRequest(after_seq=after_seq, limit=limit))
        return [message_to_dict(r) for r in reply.runs]

    # ----- push ----------------------------------------------------------------------------------------------
    def push(self, folder: Path, on_progress: Callable[[int, int], None] | None = None) -> PushOutcome:
        """Push an artifact folder; only what the device lacks crosses the wire."""
        model, manifest, manifest_text = _local_artifact(folder)
        sha, size = manifest["file"]["sha256"], manifest["file"]["size_bytes"]
        started = time.monotonic()
        name = folder.name if folder.name else "artifact"
        # FAILED_PRECONDITION means the device's staged bytes moved (an earlier stream of ours, cut off, is still
        # being wound up there): ask again where to resume, for a few seconds.
        waiting_since: float | None = None
        while True:
            stat = self._call(self.stub.StatArtifact, pb.StatArtifactRequest(sha256=sha))
            same_kind = (stat.artifact.format, stat.artifact.precision) == (manifest.get("format"), manifest.get("precision"))
            if stat.present and same_kind:
                return PushOutcome(sha, name, True, 0, 0, time.monotonic() - started)
            # Present as another kind of artifact: the push goes ahead so that the device refuses it, naming both.
            try:
                return self._push_from(model, sha, size, name, manifest_text, stat.staged_bytes, on_progress, started)
            except DeviceCallError as exc:
                waiting_since = waiting_since if waiting_since is not None else time.monotonic()
                if exc.code != "FAILED_PRECONDITION" or time.monotonic() - waiting_since > PUSH_RESUME_SECONDS:
                    raise
                time.sleep(0.5)

    def _push_from(
        self,
        model: Path,
        sha: str,
        size: int,
        name: str,
        manifest_text: str,
        offset: int,
        on_progress: Callable[[int, int], None] | None,
        started: float,
    ) -> PushOutcome:
        header = pb.PushHeader(sha256=sha, size_bytes=size, name=name, manifest_json=manifest_text, offset=offset)

        def requests() -> Iterator[pb.PushRequest]:
            yield pb.PushRequest(header=header)
            for chunk_offset, data in iter_file_chunks(model, offset, MAX_CHUNK_BYTES):
                yield pb.PushRequest(chunk=pb.Chunk(offset=chunk_offset, data=data))
                if on_progress is not None:
                    on_progress(chunk_offset + len(data), size)

        timeout = self.timeout + PUSH_SECONDS_PER_MIB * (size - offset) / (1 << 20)
        reply = self._call(self.stub.PushArtifact, requests(), timeout=timeout)
        return PushOutcome(sha, name, reply.already_present, size - offset, offset, time.monotonic() - started)

    # ----- benchmark -----------------------------------------------------------------------------------------
    def bench(
        self,
        sha256: str,
        settings: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        reconnects: int = 5,
        eval_set_sha256: str = "",
        eval_reference_sha256: str = "",
    ) -> Iterator[dict[str, Any]]:
        """Run a benchmark and yield its events as dicts; the last one is terminal (``result`` or ``error``).

        A dropped stream is re-attached with the same run id (the device never runs it twice).
        """
        run_id = run_id or uuid.uuid4().hex
        request = pb.RunBenchmarkRequest(
            run_id=run_id, sha256=sha256, eval_set_sha256=eval_set_sha256, eval_reference_sha256=eval_reference_sha256
        )
        json_format.ParseDict(settings or {}, request.settings)
        run_timeout = request.settings.timeout_seconds or 600.0
        # The deadline bounds a whole stream, queueing included; a queued run re-attaches when it expires.
        deadline = self.timeout + 2 * run_timeout
        for attempt in range(reconnects + 1):
            try:
                for event in self.stub.RunBenchmark(request, timeout=deadline, metadata=self._metadata):
                    payload = message_to_dict(event)
                    yield payload
                    if event.WhichOneof("kind") in ("result", "error"):
                        return
                raise DeviceCallError(self.address, "UNAVAILABLE", "the event stream ended without a result")
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == reconnects:
                    raise DeviceCallError(self.address, exc.code().name, exc.details() or "") from None
            except DeviceCallError:
                if attempt == reconnects:
                    raise
            time.sleep(min(2.0**attempt, 10.0))
