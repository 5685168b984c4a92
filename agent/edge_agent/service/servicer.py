"""The gRPC servicer (asyncio): a thin layer from protobuf to the store and the run queue.

RPCs (the contract is ``protos/edge_agent/v1/agent.proto``): GetDeviceInfo, StatArtifact, PushArtifact,
ListArtifacts, DeleteArtifact, RunBenchmark (server stream), GetRun, ListRuns; plus grpc.health.v1.Health.

Every handler runs on the event loop and holds no thread while it waits for a client: file I/O, hashing and
fsyncs go to a bounded thread pool (``io``). So slow, stalled or idle clients cost memory, not threads, and
health checks and unary calls stay fast however many streams are open. Limits: a client stream that sends
nothing for ``idle_timeout`` seconds is ended (DEADLINE_EXCEEDED; a push resumes from its staged bytes), and
one client (peer address) may hold at most ``max_streams_per_client`` open streams (RESOURCE_EXHAUSTED).

Errors are mapped at one boundary, :func:`_boundary`: the agent's own errors through :data:`STATUS_FOR`;
anything else is an agent fault, logged with an id and returned as INTERNAL with that id. Client input never
produces UNKNOWN, and details never carry a traceback, a path outside the store or a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from edge_agent.contract.errors import (
    AgentError,
    ArtifactNotFound,
    ArtifactRejected,
    IdleStream,
    IntegrityError,
    InvalidSettings,
    OffsetMismatch,
    QuotaExceeded,
    RuntimeUnavailable,
    ShuttingDown,
)
from edge_agent.contract.latency import SAMPLES_FIELD
from edge_agent.contract.settings import BenchmarkSettings
from edge_agent.contract.wire import parse_into, result_into, settings_into
from edge_agent.device.info import device_info
from edge_agent.runs.events import Event
from edge_agent.runs.journal import RunRecord
from edge_agent.runs.manager import RunManager
from edge_agent.store.catalogue import ArtifactStore, check_sha256
from edge_agent.store.records import ArtifactMeta, PushHeader
from edge_agent.v1 import agent_pb2 as pb
from edge_agent.v1 import agent_pb2_grpc

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_FOR: dict[type[AgentError], grpc.StatusCode] = {
    ArtifactRejected: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidSettings: grpc.StatusCode.INVALID_ARGUMENT,
    ArtifactNotFound: grpc.StatusCode.NOT_FOUND,
    IntegrityError: grpc.StatusCode.DATA_LOSS,
    OffsetMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    RuntimeUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
    QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    IdleStream: grpc.StatusCode.DEADLINE_EXCEEDED,
}


#: ListRuns pages: the default and the most a client may ask for (larger asks get the most). Listings leave the
#: latency samples out, so even the largest page is a few MB.
DEFAULT_LIST_RUNS = 200
MAX_LIST_RUNS = 1000


@dataclass(frozen=True)
class ServiceLimits:
    #: Seconds a client stream may send nothing before the agent ends it.
    idle_timeout: float = 30.0
    #: Open authenticated streaming calls (pushes, benchmark streams) one peer address may hold.
    max_streams_per_client: int = 32
    #: Open authenticated streaming calls in all; well under the server's concurrent-RPC limit, so unary calls
    #: find room.
    max_streams_total: int = 256
    #: Health ``Watch`` streams need no token, so they have their own, small budget (and lifetime): however many an
    #: unauthenticated client opens, they take no room from authenticated calls.
    max_watches_per_client: int = 4
    max_watches_total: int = 32
    watch_lifetime: float = 600.0
    #: A push slower than this over ``slow_push_window`` seconds is ended (it resumes later): a stalled client
    #: must not hold its quota reservation for ever by trickling bytes.
    min_push_bytes_per_second: int = 16 << 10
    slow_push_window: float = 60.0


class StreamSlots:
    """Counts open streams per client address and in all; refuses one over either limit (RESOURCE_EXHAUSTED)."""

    def __init__(self, per_client: int, total: int, what: str = "streams") -> None:
        self.per_client = per_client
        self.total = total
        self.what = what
        self._open: Counter[str] = Counter()

    @classmethod
    def for_calls(cls, limits: ServiceLimits) -> StreamSlots:
        return cls(limits.max_streams_per_client, limits.max_streams_total)

    @classmethod
    def for_watches(cls, limits: ServiceLimits) -> StreamSlots:
        return cls(limits.max_watches_per_client, limits.max_watches_total, "health watches")

    @contextlib.contextmanager
    def hold(self, peer: str) -> Iterator[None]:
        host = _peer_host(peer)
        if self._open[host] >= self.per_client:
            raise QuotaExceeded(
                f"this client already has {self.per_client} open {self.what} on the agent; finish or cancel some, then retry"
            )
        if sum(self._open.values()) >= self.total:
            raise QuotaExceeded(f"the agent has {self.total} open {self.what}; retry later")
        self._open[host] += 1
        try:
            yield
        finally:
            self._open[host] -= 1
            if self._open[host] <= 0:
                del self._open[host]


def status_for(error: AgentError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.INTERNAL


async def _abort_internal(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    incident = uuid.uuid4().hex[:12]
    _LOGGER.error("internal error %s in %s", incident, method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error {incident} in the agent; see its log")


def _boundary(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Map every exception of a unary or client-streaming handler to a status code (never UNKNOWN)."""

    @functools.wraps(method)
    async def wrapper(self: AgentService, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except AgentError as exc:
            await context.abort(status_for(exc), str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort_internal(context, exc, method.__name__)
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


def _stream_boundary(method: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
    """The same boundary for server-streaming handlers."""

    @functools.wraps(method)
    async def wrapper(self: AgentService, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
        try:
            async for item in method(self, request, context):
                yield item
        except AgentError as exc:
            await context.abort(status_for(exc), str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:
            await _abort_internal(context, exc, method.__name__)

    return wrapper


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


def run_record_pb(record: RunRecord, *, with_samples: bool = True) -> pb.RunRecord:
    out = pb.RunRecord(
        run_id=record.run_id,
        sha256=record.sha256,
        state=f"RUN_STATE_{record.state}",
        accepted_at=record.accepted_at,
        finished_at=record.finished_at,
        seq=record.seq,
    )
    settings_into(out.settings, record.settings)
    if record.result:
        result = dict(record.result)
        if not with_samples and isinstance(result.get("latency"), dict):
            result["latency"] = {k: v for k, v in result["latency"].items() if k != SAMPLES_FIELD}
        result_into(out.result, result)
    if record.error:
        parse_into(out.error, record.error)
    return out


def event_pb(event: Event) -> pb.RunEvent:
    out = pb.RunEvent(run_id=event.run_id, state=f"RUN_STATE_{event.state}")
    if event.kind == "queued":
        out.queue_position = int(event.payload)
    elif event.kind == "phase":
        out.phase = str(event.payload)
    elif event.kind == "progress":
        out.progress.CopyFrom(pb.Progress(done=event.payload["done"], total=event.payload["total"], phase=event.payload["phase"]))
    elif event.kind == "result":
        result_into(out.result, event.payload)
    else:
        parse_into(out.error, event.payload)
    return out


class LoopSink:
    """Hands a run's events from any thread to a queue on the event loop (the streaming handler awaits it).

    Bounded: a client that stops reading loses progress events beyond ``MAX_QUEUED_EVENTS`` (never the terminal
    one, never memory without limit).
    """

    MAX_QUEUED_EVENTS = 64

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is gone, nobody listens
            self._loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: Event) -> None:
        if event.kind in ("progress", "queued", "phase") and self.queue.qsize() >= self.MAX_QUEUED_EVENTS:
            return
        self.queue.put_nowait(event)


class AgentService(agent_pb2_grpc.EdgeAgentServicer):
    def __init__(
        self,
        store: ArtifactStore,
        runs: RunManager,
        device_id: str,
        *,
        limits: ServiceLimits | None = None,
        io: ThreadPoolExecutor | None = None,
        warnings: Callable[[], list[str]] | None = None,
        confinement: str = "",
        slots: StreamSlots | None = None,
    ) -> None:
        self.store = store
        self.runs = runs
        self.device_id = device_id
        self.limits = limits or ServiceLimits()
        self.io = io or ThreadPoolExecutor(max_workers=8, thread_name_prefix="edge-agent-io")
        #: Commits (read-back hash, the ONNX guard: CPU work bounded per push) run here, one at a time, so a
        #: costly model cannot take the I/O pool from other clients.
        self.commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-agent-commit")
        self.warnings = warnings or (lambda: [])
        self.confinement = confinement
        self.slots = slots or StreamSlots.for_calls(self.limits)

    def _close_abandoned_upload(self, begun: asyncio.Future[Any]) -> None:
        """Release the reservation of a push whose call was cancelled while ``begin_push`` ran."""
        if not begun.cancelled() and begun.exception() is None:
            self.io.submit(begun.result().close)

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, functools.partial(fn, *args))

    def _stream_slot(self, context: grpc.aio.ServicerContext) -> contextlib.AbstractContextManager[None]:
        return self.slots.hold(context.peer())

    async def _next(self, iterator: AsyncIterator[T], what: str) -> T | None:
        try:
            return await asyncio.wait_for(anext(iterator, None), timeout=self.limits.idle_timeout)
        except TimeoutError:
            raise IdleStream(f"the client sent nothing for {self.limits.idle_timeout:g} s {what}; the stream was ended") from None

    # ----- RPCs ----------------------------------------------------------------------------------------------
    @_boundary
    async def GetDeviceInfo(self, request: pb.GetDeviceInfoRequest, context: grpc.aio.ServicerContext) -> pb.DeviceInfo:
        # Runtimes as the benchmark workers' interpreter has them (waits for its first answer only after start).
        info = await self._blocking(functools.partial(device_info, self.device_id, probe=self.runs.runtime_probe))
        out = parse_into(pb.DeviceInfo(), info)
        out.warnings.extend(self.warnings())
        out.worker_confinement = self.confinement
        return out

    @_boundary
    async def StatArtifact(self, request: pb.StatArtifactRequest, context: grpc.aio.ServicerContext) -> pb.StatArtifactResponse:
        sha256 = check_sha256(request.sha256)
        meta = await self._blocking(self.store.get, sha256)
        if meta is not None:
            return pb.StatArtifactResponse(present=True, artifact=artifact_pb(meta))
        return pb.StatArtifactResponse(present=False, staged_bytes=await self._blocking(self.store.staged_bytes, sha256))

    @_boundary
    async def PushArtifact(
        self, request_iterator: AsyncIterator[pb.PushRequest], context: grpc.aio.ServicerContext
    ) -> pb.PushResponse:
        with self._stream_slot(context):
            first = await self._next(request_iterator, "before the push header")
            if first is None or first.WhichOneof("kind") != "header":
                raise ArtifactRejected("the first message of a push must be its header")
            if not self.runs.accepting:
                raise ShuttingDown("the agent is shutting down; push again when it is back, or to another device")
            h = first.header
            header = PushHeader(h.sha256, h.size_bytes, h.name, h.manifest_json, h.offset)
            # On a thread, like every manifest read: it is parsed within the same bounds as a new push's.
            existing = await self._blocking(self.store.already_present, header)
            if existing is not None:
                return pb.PushResponse(artifact=artifact_pb(existing), already_present=True)
            loop = asyncio.get_running_loop()
            # begin_push reserves the artifact (a second push of it is refused until this one is closed). If this
            # call is cancelled (client gone) while it runs on its thread, the reservation it makes is released
            # when it completes: otherwise the artifact would stay "in progress" for good.
            begin = loop.run_in_executor(self.io, functools.partial(self.store.begin_push, header))
            try:
                upload = await asyncio.shield(begin)
            except asyncio.CancelledError:
                begin.add_done_callback(self._close_abandoned_upload)
                raise
            # The file work runs on other threads; if this call is cancelled (deadline, client gone) the thread
            # still runs, so the upload is closed only once its last piece of work has finished. One chunk is
            # written while the next is received (a write's error surfaces at the next message or the end), so
            # the event loop and the disk work side by side; writes stay one at a time and in order.
            in_flight: asyncio.Future[Any] | None = None
            window_start, window_position = loop.time(), upload.position
            try:
                while True:
                    message = await self._next(request_iterator, f"at byte {upload.position} of the push")
                    if in_flight is not None:
                        await in_flight
                    if message is None:
                        break
                    if loop.time() - window_start >= self.limits.slow_push_window:
                        rate = (upload.position - window_position) / (loop.time() - window_start)
                        if rate < self.limits.min_push_bytes_per_second:
                            raise IdleStream(
                                f"the push ran at {rate:.0f} B/s, below {self.limits.min_push_bytes_per_second} B/s for "
                                f"{self.limits.slow_push_window:g} s; it was ended: resume from byte {upload.position}"
                            )
                        window_start, window_position = loop.time(), upload.position
                    if message.WhichOneof("kind") != "chunk":
                        raise ArtifactRejected("only chunks may follow the header")
                    in_flight = loop.run_in_executor(self.io, upload.write, message.chunk.offset, message.chunk.data)
                if not upload.complete:
                    raise OffsetMismatch(
                        f"the stream ended at byte {upload.position} of {header.size_bytes}; resume from {upload.position}"
                    )
                in_flight = loop.run_in_executor(self.commits, upload.finish)
                meta = await in_flight
            finally:
                if in_flight is not None:
                    with contextlib.suppress(BaseException):  # its error, if any, is not this call's answer any more
                        await asyncio.shield(in_flight)
                # Submitted before it is awaited, and shielded: a cancellation arriving now cannot keep it from running.
                await asyncio.shield(loop.run_in_executor(self.io, upload.close))
            _LOGGER.info("committed artifact %s (%s, %d bytes)", meta.sha256, meta.name, meta.size_bytes)
            return pb.PushResponse(artifact=artifact_pb(meta), bytes_received=upload.received)

    @_boundary
    async def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListArtifactsResponse:
        metas = await self._blocking(self.store.list)
        return pb.ListArtifactsResponse(artifacts=[artifact_pb(m) for m in metas])

    @_boundary
    async def DeleteArtifact(
        self, request: pb.DeleteArtifactRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteArtifactResponse:
        if not await self._blocking(self.store.delete, check_sha256(request.sha256)):
            raise ArtifactNotFound(f"artifact {request.sha256} is not on this device")
        return pb.DeleteArtifactResponse(deleted=True)

    @_stream_boundary
    async def RunBenchmark(
        self, request: pb.RunBenchmarkRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunEvent]:
        with self._stream_slot(context):
            settings = BenchmarkSettings.from_proto(request.settings, cpu_count=os.cpu_count() or 1)
            sha256 = check_sha256(request.sha256)
            submit = functools.partial(
                self.runs.submit,
                eval_set=request.eval_set_sha256 and check_sha256(request.eval_set_sha256),
                eval_reference=request.eval_reference_sha256 and check_sha256(request.eval_reference_sha256),
            )
            sink = LoopSink(asyncio.get_running_loop())
            run_id = await self._blocking(submit, request.run_id, sha256, settings, sink)
            try:
                while True:
                    event = await sink.queue.get()
                    yield await self._blocking(event_pb, event) if event.kind == "result" else event_pb(event)
                    if event.kind in ("result", "error"):
                        return
            finally:
                # The manager's lock may be held across a journal fsync: never wait for it on the event loop.
                await self._blocking(self.runs.unsubscribe, run_id, sink)

    @_boundary
    async def GetRun(self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext) -> pb.RunRecord:
        record = self.runs.journal.get(request.run_id)
        if record is None:
            raise ArtifactNotFound(f"run {request.run_id[:128]!r} is not in this device's journal")
        return await self._blocking(run_record_pb, record)  # a result with many samples is slow to convert

    @_boundary
    async def ListRuns(self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext) -> pb.ListRunsResponse:
        limit = min(request.limit, MAX_LIST_RUNS) if request.limit > 0 else DEFAULT_LIST_RUNS

        def page() -> pb.ListRunsResponse:  # on a thread: the journal's lock may be held (a write, a compaction)
            records = self.runs.journal.after(request.after_seq, limit)
            # Latency samples stay out of listings (GetRun returns them): a page stays far below the message limit.
            return pb.ListRunsResponse(runs=[run_record_pb(r, with_samples=False) for r in records])

        return await self._blocking(page)


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` → ``ipv4:127.0.0.1``: streams are counted per client address, not per connection."""
    head, _, _port = peer.rpartition(":")
    return head or peer
