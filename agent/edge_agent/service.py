"""The gRPC servicer: a thin layer from protobuf to the store and the run queue.

RPCs (the contract is ``protos/edge_agent/v1/agent.proto``): GetDeviceInfo, StatArtifact, PushArtifact,
ListArtifacts, DeleteArtifact, RunBenchmark (server stream), GetRun, ListRuns; plus grpc.health.v1.Health.
Domain errors become status codes in one table, :data:`STATUS_FOR`; details carry the error's message only
(never a traceback, a path outside the store, or a token).
"""

from __future__ import annotations

import logging
import math
import queue
from collections.abc import Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format

from edge_agent.device import device_info
from edge_agent.errors import (
    AgentError,
    ArtifactNotFound,
    ArtifactRejected,
    IntegrityError,
    InvalidSettings,
    OffsetMismatch,
    QuotaExceeded,
    RuntimeUnavailable,
)
from edge_agent.journal import RunRecord
from edge_agent.runs import Event, RunManager
from edge_agent.store import ArtifactMeta, ArtifactStore, PushHeader, check_sha256
from edge_agent.v1 import agent_pb2 as pb
from edge_agent.v1 import agent_pb2_grpc

_LOGGER = logging.getLogger(__name__)

STATUS_FOR: dict[type[AgentError], grpc.StatusCode] = {
    ArtifactRejected: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidSettings: grpc.StatusCode.INVALID_ARGUMENT,
    ArtifactNotFound: grpc.StatusCode.NOT_FOUND,
    IntegrityError: grpc.StatusCode.DATA_LOSS,
    OffsetMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    RuntimeUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
    QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
#: How often a streaming handler wakes to notice a cancelled client.
_POLL_SECONDS = 0.5


def abort(context: grpc.ServicerContext, error: AgentError) -> NoReturn:
    code = STATUS_FOR.get(type(error), grpc.StatusCode.INTERNAL)
    context.abort(code, str(error))
    raise AssertionError("unreachable")  # context.abort raises


def artifact_pb(meta: ArtifactMeta, manifest_json: str = "") -> pb.ArtifactInfo:
    return pb.ArtifactInfo(
        sha256=meta.sha256,
        size_bytes=meta.size_bytes,
        name=meta.name,
        format=meta.format,
        precision=meta.precision,
        manifest_json=manifest_json,
        committed_at=meta.committed_at,
    )


def _jsonable(value: Any) -> Any:
    """protobuf's JSON parser wants NaN / Infinity as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _parse(message: Any, payload: dict[str, Any] | None) -> Any:
    return json_format.ParseDict(_jsonable(payload or {}), message, ignore_unknown_fields=True)


def run_record_pb(record: RunRecord) -> pb.RunRecord:
    out = pb.RunRecord(
        run_id=record.run_id,
        sha256=record.sha256,
        state=pb.RunState.Value(f"RUN_STATE_{record.state}"),
        accepted_at=record.accepted_at,
        finished_at=record.finished_at,
        seq=record.seq,
    )
    _parse(out.settings, record.settings)
    if record.result:
        _parse(out.result, record.result)
    if record.error:
        _parse(out.error, record.error)
    return out


def event_pb(event: Event) -> pb.RunEvent:
    out = pb.RunEvent(run_id=event.run_id, state=pb.RunState.Value(f"RUN_STATE_{event.state}"))
    if event.kind == "queued":
        out.queue_position = int(event.payload)
    elif event.kind == "phase":
        out.phase = str(event.payload)
    elif event.kind == "progress":
        out.progress.CopyFrom(pb.Progress(done=event.payload["done"], total=event.payload["total"], phase=event.payload["phase"]))
    elif event.kind == "result":
        _parse(out.result, event.payload)
    else:
        _parse(out.error, event.payload)
    return out


class AgentService(agent_pb2_grpc.EdgeAgentServicer):
    def __init__(self, store: ArtifactStore, runs: RunManager, device_id: str) -> None:
        self.store = store
        self.runs = runs
        self.device_id = device_id

    def GetDeviceInfo(self, request: pb.GetDeviceInfoRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:
        return _parse(pb.DeviceInfo(), device_info(self.device_id))

    def StatArtifact(self, request: pb.StatArtifactRequest, context: grpc.ServicerContext) -> pb.StatArtifactResponse:
        try:
            meta = self.store.get(check_sha256(request.sha256))
            if meta is not None:
                return pb.StatArtifactResponse(present=True, artifact=artifact_pb(meta))
            return pb.StatArtifactResponse(present=False, staged_bytes=self.store.staged_bytes(request.sha256))
        except AgentError as exc:
            abort(context, exc)

    def PushArtifact(self, request_iterator: Iterator[pb.PushRequest], context: grpc.ServicerContext) -> pb.PushResponse:
        try:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("kind") != "header":
                raise ArtifactRejected("the first message of a push must be its header")
            h = first.header
            existing = self.store.get(check_sha256(h.sha256))
            if existing is not None:
                return pb.PushResponse(artifact=artifact_pb(existing), already_present=True)
            header = PushHeader(h.sha256, h.size_bytes, h.name, h.manifest_json, h.offset)
            with self.store.begin_push(header) as upload:
                for message in request_iterator:
                    if message.WhichOneof("kind") != "chunk":
                        raise ArtifactRejected("only chunks may follow the header")
                    upload.write(message.chunk.offset, message.chunk.data)
                if not upload.complete:
                    if not context.is_active():
                        return pb.PushResponse()  # client gone: the bytes stay staged for resume
                    raise OffsetMismatch(
                        f"the stream ended at byte {upload.position} of {header.size_bytes}; resume from {upload.position}"
                    )
                meta = upload.finish()
            _LOGGER.info("committed artifact %s (%s, %d bytes)", meta.sha256, meta.name, meta.size_bytes)
            return pb.PushResponse(artifact=artifact_pb(meta), bytes_received=upload.received)
        except AgentError as exc:
            abort(context, exc)

    def ListArtifacts(self, request: pb.ListArtifactsRequest, context: grpc.ServicerContext) -> pb.ListArtifactsResponse:
        return pb.ListArtifactsResponse(artifacts=[artifact_pb(m) for m in self.store.list()])

    def DeleteArtifact(self, request: pb.DeleteArtifactRequest, context: grpc.ServicerContext) -> pb.DeleteArtifactResponse:
        try:
            if not self.store.delete(check_sha256(request.sha256)):
                raise ArtifactNotFound(f"artifact {request.sha256} is not on this device")
            return pb.DeleteArtifactResponse(deleted=True)
        except AgentError as exc:
            abort(context, exc)

    def RunBenchmark(self, request: pb.RunBenchmarkRequest, context: grpc.ServicerContext) -> Iterator[pb.RunEvent]:
        try:
            settings = json_format.MessageToDict(request.settings, preserving_proto_field_name=True)
            events = self.runs.submit(
                request.run_id,
                check_sha256(request.sha256),
                settings,
                eval_set=request.eval_set_sha256 and check_sha256(request.eval_set_sha256),
                eval_reference=request.eval_reference_sha256 and check_sha256(request.eval_reference_sha256),
            )
        except AgentError as exc:
            abort(context, exc)
        run_id = None
        try:
            while context.is_active():
                try:
                    event = events.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                run_id = event.run_id
                yield event_pb(event)
                if event.kind in ("result", "error"):
                    return
        finally:
            if run_id is not None:
                self.runs.unsubscribe(run_id, events)

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.RunRecord:
        record = self.runs.journal.get(request.run_id)
        if record is None:
            abort(context, ArtifactNotFound(f"run {request.run_id[:128]!r} is not in this device's journal"))
        return run_record_pb(record)

    def ListRuns(self, request: pb.ListRunsRequest, context: grpc.ServicerContext) -> pb.ListRunsResponse:
        limit = request.limit if 0 < request.limit <= 10_000 else 1000
        return pb.ListRunsResponse(runs=[run_record_pb(r) for r in self.runs.journal.after(request.after_seq, limit)])
