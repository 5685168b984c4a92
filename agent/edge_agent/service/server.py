"""Build and run the agent's gRPC server (asyncio): options, interceptors, health, store lock, graceful stop.

``with run_server(config) as (server, port): ...`` starts a real server on its own event-loop thread (``port``
is the bound one: pass ``listen="127.0.0.1:0"`` in tests) and stops it gracefully on exit. :func:`serve` is the
daemon's main loop: SIGTERM / SIGINT flip health to NOT_SERVING, refuse new runs (UNAVAILABLE), end queued
runs INTERRUPTED, let the running one finish within the grace period, and exit 0.

The store is locked (``<store>/agent.lock``, an exclusive ``flock``) for the agent's lifetime: a second agent on
the same store refuses to start instead of corrupting the first one's journal and staging files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edge_agent import __version__
from edge_agent.config import AgentConfig
from edge_agent.contract.chunks import MAX_CHUNK_BYTES
from edge_agent.runs.journal import Journal
from edge_agent.runs.manager import RunManager
from edge_agent.runtimes.probe import RuntimeProbe
from edge_agent.service.auth import (
    TokenAuthInterceptor,
    resolve_token,
    server_credentials,
)
from edge_agent.service.health import BoundedHealthServicer
from edge_agent.service.lock import StoreLock, check_store_dir, device_id_for
from edge_agent.service.servicer import AgentService, ServiceLimits, StreamSlots
from edge_agent.store.catalogue import ArtifactStore
from edge_agent.v1 import agent_pb2_grpc
from edge_agent.worker.confine import landlock_abi

_LOGGER = logging.getLogger(__name__)
SERVICE_NAME: Final = "edge_agent.v1.EdgeAgent"

#: A push chunk (≤ 1 MiB) plus its header and framing; nothing larger is ever needed, so nothing larger is read.
MAX_RECEIVE_MESSAGE_BYTES: Final = MAX_CHUNK_BYTES + (64 << 10)
#: A RunResult with every latency sample kept (1e6 doubles) fits; responses are never larger.
MAX_SEND_MESSAGE_BYTES: Final = 16 << 20
#: Concurrent RPCs before new ones get RESOURCE_EXHAUSTED. Idle streams cost memory, not threads, so this is
#: set well above the per-client stream limit: health checks and unary calls always find room.
MAXIMUM_CONCURRENT_RPCS: Final = 512
#: Threads for file I/O, hashing and fsyncs (handlers never block the event loop).
IO_THREADS: Final = 8
SERVER_OPTIONS: Final[list[tuple[str, int]]] = [
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
    ("grpc.max_metadata_size", 16 << 10),  # a bearer token and a few headers; bigger metadata is refused
    ("grpc.keepalive_time_ms", 30_000),  # ping idle connections every 30 s to find dead peers (Wi-Fi drops)
    ("grpc.keepalive_timeout_ms", 10_000),  # a ping unanswered for 10 s closes the connection
    ("grpc.keepalive_permit_without_calls", 1),  # collectors may hold idle channels open
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),  # accept client pings this often
    ("grpc.max_connection_idle_ms", 2 * 60 * 1000),  # close connections with no calls for 2 minutes (clients reconnect)
    ("grpc.max_connection_age_ms", 24 * 3600 * 1000),  # recycle connections daily (certificate rotation)
    ("grpc.max_connection_age_grace_ms", 3600 * 1000),  # ...but let a long benchmark stream finish
]


@dataclass
class Agent:
    """A running agent; its server lives on ``loop`` (a thread of its own, or the main thread under :func:`serve`)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer  # type: ignore[name-defined]  # grpc-stubs lacks health.aio
    runs: RunManager
    store: ArtifactStore
    loop: asyncio.AbstractEventLoop
    io: ThreadPoolExecutor
    lock: StoreLock
    auth: str
    service: AgentService

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Graceful stop: NOT_SERVING first, queued runs INTERRUPTED, the running one gets ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await asyncio.get_running_loop().run_in_executor(self.io, self.runs.shutdown, grace)
        await self.server.stop(grace=min(grace, 5.0))
        self.service.commits.shutdown(wait=True)  # no commit may still write once the store lock is released
        self.io.shutdown(wait=True)
        self.runs.journal.close()
        self.lock.release()


async def start_agent(config: AgentConfig) -> Agent:
    """Start an agent on the running event loop.

    Raises:
        ValueError: a bad configuration. StoreLocked: another agent holds the store. OSError: the address.
    """
    config.check()
    check_store_dir(config.store)
    lock = StoreLock(config.store)
    try:
        return await _start_locked(config, lock)
    except BaseException:
        lock.release()
        raise


async def _start_locked(config: AgentConfig, lock: StoreLock) -> Agent:
    loop = asyncio.get_running_loop()
    token, auth = resolve_token(config)
    io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="edge-agent-io")
    store = ArtifactStore(config.store, config.limits)
    journal = Journal(config.store / "runs" / "journal.jsonl", keep_runs=config.keep_runs)
    worker_python, _source = config.worker_interpreter()  # validated by config.check()
    # What the workers' interpreter has (device info, runs refused for a missing runtime), asked of it in the
    # background so that the agent serves at once.
    runtime_probe = RuntimeProbe(worker_python).start()
    limits = ServiceLimits(idle_timeout=config.idle_timeout, max_streams_per_client=config.max_streams_per_client)
    slots = StreamSlots.for_calls(limits)
    health_servicer = BoundedHealthServicer(StreamSlots.for_watches(limits), slots, limits.watch_lifetime, token)
    agent_ref: list[Agent] = []

    def on_degraded(degraded: bool) -> None:  # from the run manager's threads
        if agent_ref:
            asyncio.run_coroutine_threadsafe(agent_ref[0].set_serving(not degraded), loop)

    runs = RunManager(
        store,
        journal,
        max_queue=config.max_queue,
        memory_limit_bytes=config.memory_limit_bytes,
        worker_command=[worker_python, "-m", "edge_agent.worker.main"],
        on_degraded=on_degraded,
        private_paths=[str(p) for p in (config.token_file, config.tls_key, config.tls_cert, config.client_ca) if p],
        runtime_probe=runtime_probe,
    )
    if runs.interrupted_at_start:
        count = len(runs.interrupted_at_start)
        _LOGGER.warning("%d run(s) were interrupted by the last stop and are reported as INTERRUPTED", count)
    abi = landlock_abi()
    confinement = f"landlock ABI {abi}" if abi else "not confined: the kernel offers no Landlock"

    def warnings() -> list[str]:
        notes = list(journal.problems)
        if runs.degraded:
            notes.append(f"results cannot be recorded, no run is accepted: {runs.degraded_reason}")
        if not abi:
            notes.append("benchmark workers run without filesystem confinement (no Landlock in this kernel)")
        if runtime_probe.problem:
            notes.append(runtime_probe.problem)
        return notes

    service = AgentService(
        store,
        runs,
        device_id_for(config.store),
        limits=limits,
        slots=slots,
        io=io,
        warnings=warnings,
        confinement=confinement,
    )
    server = grpc.aio.server(
        interceptors=[TokenAuthInterceptor(token)] if token else [],
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=MAXIMUM_CONCURRENT_RPCS,
    )
    agent_pb2_grpc.add_EdgeAgentServicer_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.tls_cert and config.tls_key:
        port = server.add_secure_port(config.listen, server_credentials(config.tls_cert, config.tls_key, config.client_ca))
    else:
        port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    await server.start()
    agent = Agent(server, port, health_servicer, runs, store, loop, io, lock, auth, service)
    agent_ref.append(agent)
    await agent.set_serving(not runs.degraded)
    return agent


class _LoopThread:
    """An event loop on a daemon thread, for running an agent inside a synchronous program (tests, benchmarks)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="edge-agent-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@contextlib.contextmanager
def run_server(config: AgentConfig, grace: float = 1.0) -> Iterator[tuple[Agent, int]]:
    """Run an agent on a thread of its own for the ``with`` block; yields ``(agent, port)``."""
    runner = _LoopThread()
    try:
        agent = runner.run(start_agent(config), timeout=60)
        try:
            yield agent, agent.port
        finally:
            runner.run(agent.stop(grace), timeout=grace + 60)
    finally:
        runner.close()


def start_line(config: AgentConfig, agent: Agent) -> str:
    host = config.listen.rsplit(":", 1)[0]
    mode = "TLS" + (" + client certificates" if config.client_ca else "") if config.tls_cert else "plaintext"
    return f"edge-agent {__version__}: serving on {host}:{agent.port} ({mode}, {agent.auth}); store {config.store}"
