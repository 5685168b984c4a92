"""Build and run the agent's gRPC server: options, interceptors, health, graceful shutdown.

``with run_server(config) as (server, port): ...`` starts a real server (``port`` is the bound one: pass
``listen="127.0.0.1:0"`` in tests) and stops it gracefully on exit. :func:`serve` is the daemon's main loop:
SIGTERM / SIGINT flip health to NOT_SERVING, refuse new runs, let the current one finish within the grace
period, journal anything still open, and exit 0.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edge_agent.auth import TokenAuthInterceptor, read_token, server_credentials
from edge_agent.device import start_torch_probe
from edge_agent.journal import Journal
from edge_agent.runs import RunManager
from edge_agent.service import AgentService
from edge_agent.store import MAX_CHUNK_BYTES, ArtifactStore, StoreLimits
from edge_agent.v1 import agent_pb2_grpc

_LOGGER = logging.getLogger(__name__)
SERVICE_NAME = "edge_agent.v1.EdgeAgent"

#: A push chunk (≤ 1 MiB) plus its header and framing; nothing larger is ever needed, so nothing larger is read.
MAX_RECEIVE_MESSAGE_BYTES = MAX_CHUNK_BYTES + (64 << 10)
#: A RunResult with every latency sample kept (1e6 doubles) fits; responses are never larger.
MAX_SEND_MESSAGE_BYTES = 16 << 20
#: Concurrent RPCs before new ones get RESOURCE_EXHAUSTED (a Pi has little memory; streams are long-lived).
MAXIMUM_CONCURRENT_RPCS = 64
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),  # ping idle connections every 30 s to find dead peers (Wi-Fi drops)
    ("grpc.keepalive_timeout_ms", 10_000),  # a ping unanswered for 10 s closes the connection
    ("grpc.keepalive_permit_without_calls", 1),  # collectors may hold idle channels open
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),  # accept client pings this often
    ("grpc.max_connection_age_ms", 24 * 3600 * 1000),  # recycle connections daily (certificate rotation)
    ("grpc.max_connection_age_grace_ms", 3600 * 1000),  # ...but let a long benchmark stream finish
]


class InsecureBindError(ValueError):
    pass


@dataclass(frozen=True)
class AgentConfig:
    listen: str = "127.0.0.1:50051"
    store: Path = Path("/var/lib/edge-agent")
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    insecure: bool = False
    limits: StoreLimits = field(default_factory=StoreLimits)
    max_queue: int = 16
    memory_limit_bytes: int = 0
    grace_seconds: float = 30.0
    worker_threads: int = 16
    #: The interpreter that runs benchmark workers (default: this one; an emulator's launcher under qemu).
    worker_python: str | None = None

    def check(self) -> None:
        """Raises ValueError for a config that would not start or would be unsafe."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.client_ca is not None and self.tls_cert is None:
            raise ValueError("--client-ca (mTLS) needs --tls-cert and --tls-key")
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        if not self.insecure and not _is_loopback(host) and not (self.tls_cert and (self.token_file or self.client_ca)):
            raise InsecureBindError(
                f"refusing to listen on {self.listen} without TLS and authentication: configure --tls-cert/--tls-key "
                "with --token-file or --client-ca, listen on 127.0.0.1, or pass --insecure on a network you trust"
            )
        for path in (self.token_file, self.tls_cert, self.tls_key, self.client_ca):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} does not exist; check the path given to the flag or config key")
        if self.token_file is not None:
            read_token(self.token_file)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def device_id_for(store: Path) -> str:
    """A stable id per store: written once, kept across restarts."""
    path = store / "device_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        store.mkdir(parents=True, exist_ok=True)
        value = uuid.uuid4().hex[:16]
        path.write_text(value + "\n")
        return value


@dataclass
class Agent:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    runs: RunManager
    store: ArtifactStore

    def stop(self, grace: float) -> None:
        """Graceful stop: NOT_SERVING first, then let in-flight work finish within ``grace``."""
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.runs.shutdown(grace)
        self.server.stop(grace=min(grace, 5.0)).wait()
        self.runs.journal.close()


def start_agent(config: AgentConfig) -> Agent:
    config.check()
    start_torch_probe()
    store = ArtifactStore(config.store, config.limits)
    journal = Journal(config.store / "runs" / "journal.jsonl")
    worker_python = config.worker_python or os.environ.get("EDGE_AGENT_WORKER_PYTHON") or sys.executable
    runs = RunManager(
        store,
        journal,
        max_queue=config.max_queue,
        memory_limit_bytes=config.memory_limit_bytes,
        worker_command=[worker_python, "-m", "edge_agent.worker"],
    )
    if runs.interrupted_at_start:
        _LOGGER.warning(
            "%d run(s) were interrupted by the last stop and are reported as INTERRUPTED", len(runs.interrupted_at_start)
        )
    interceptors = [TokenAuthInterceptor(read_token(config.token_file))] if config.token_file else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.worker_threads, thread_name_prefix="edge-agent-rpc"),
        interceptors=interceptors,
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=MAXIMUM_CONCURRENT_RPCS,
    )
    agent_pb2_grpc.add_EdgeAgentServicer_to_server(AgentService(store, runs, device_id_for(config.store)), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.tls_cert and config.tls_key:
        port = server.add_secure_port(config.listen, server_credentials(config.tls_cert, config.tls_key, config.client_ca))
    else:
        port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return Agent(server, port, health_servicer, runs, store)


@contextlib.contextmanager
def run_server(config: AgentConfig) -> Iterator[tuple[grpc.Server, int]]:
    agent = start_agent(config)
    try:
        yield agent.server, agent.port
    finally:
        agent.stop(grace=1.0)


def serve(config: AgentConfig, ready: threading.Event | None = None) -> int:
    """Run until SIGTERM / SIGINT; returns the exit code (0 after a graceful stop)."""
    agent = start_agent(config)
    host = config.listen.rsplit(":", 1)[0]
    mode = "TLS" + (" + client certificates" if config.client_ca else "") if config.tls_cert else "plaintext"
    auth = "token" if config.token_file else "no token"
    _LOGGER.info("edge-agent serving on %s:%d (%s, %s), store %s", host, agent.port, mode, auth, config.store)
    print(f"edge-agent: serving on {host}:{agent.port} ({mode}, {auth}); store {config.store}", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        _LOGGER.info("received %s: shutting down (grace %.0f s)", signal.Signals(signum).name, config.grace_seconds)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if ready is not None:
        ready.set()
    stop.wait()
    agent.stop(config.grace_seconds)
    return 0
