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
import fcntl
import ipaddress
import logging
import os
import resource
import shutil
import signal
import stat
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edge_agent import __version__
from edge_agent.contract.errors import QuotaExceeded, StoreLocked
from edge_agent.contract.files import write_durably
from edge_agent.runs.journal import DEFAULT_KEEP_RUNS, Journal
from edge_agent.runs.manager import RunManager
from edge_agent.runtimes.probe import RuntimeProbe
from edge_agent.service.auth import TokenAuthInterceptor, bearer_token, ensure_token, read_token, server_credentials, tokens_match
from edge_agent.service.servicer import AgentService, ServiceLimits, StreamSlots
from edge_agent.store.catalogue import MAX_CHUNK_BYTES, ArtifactStore, StoreLimits
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


class InsecureBindError(ValueError):
    pass


class BoundedHealthServicer(health.aio.HealthServicer):
    """grpc's health service. Its ``Watch`` streams are open to anyone (health needs no token), so unauthenticated
    watches have their own per-client and total limits, apart from authenticated calls', and a lifetime (the client
    watches again): they can neither fill the server nor take room from those who hold the token. A watch that
    presents the token counts as one of the token holder's streams instead."""

    def __init__(self, watch_slots: StreamSlots, call_slots: StreamSlots, lifetime: float, token: str | None) -> None:
        super().__init__()
        self._watch_slots = watch_slots
        self._call_slots = call_slots
        self._lifetime = lifetime
        self._token = token

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        presented = bearer_token(context.invocation_metadata())
        holder = bool(self._token and presented and tokens_match(presented, self._token))
        slots = self._call_slots if holder else self._watch_slots
        try:
            with slots.hold(context.peer()):
                await asyncio.wait_for(super().Watch(request, context), timeout=self._lifetime)
        except QuotaExceeded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"a health watch lasts {self._lifetime:g} s; watch again")


#: Names the workers' interpreter when the ``worker_python`` key or flag does not (the emulated Pi's launchers set it).
WORKER_PYTHON_ENV: Final = "EDGE_AGENT_WORKER_PYTHON"
#: The most any setting given in MB may be (16 TiB): beyond any device's store or memory, and a number of bytes
#: given by mistake for MB (e.g. --quota-mb 4294967296) is refused, not taken as petabytes.
MAX_MB: Final = 1 << 24


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
    #: Seconds a client stream may send nothing before it is ended.
    idle_timeout: float = 30.0
    #: Open streams (pushes, benchmark streams) one client address may hold.
    max_streams_per_client: int = 32
    #: The interpreter that runs benchmark workers (default: $EDGE_AGENT_WORKER_PYTHON, else this one; an
    #: emulator's launcher under qemu). :meth:`worker_interpreter` resolves it, :meth:`check` validates it.
    worker_python: str | None = None
    #: Finished runs the results journal keeps (older ones are compacted away): bounds its file and memory.
    keep_runs: int = DEFAULT_KEEP_RUNS

    def check(self) -> None:
        """Raises ValueError for a config that would not start or would be unsafe."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.client_ca is not None and self.tls_cert is None:
            raise ValueError("--client-ca (mTLS) needs --tls-cert and --tls-key")
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        if not self.insecure and not _is_loopback(host) and not self.tls_cert:
            raise InsecureBindError(
                f"refusing to listen on {self.listen} without TLS: configure --tls-cert/--tls-key (the token is then "
                "encrypted on the wire), listen on 127.0.0.1, or pass --insecure on a network you trust"
            )
        for path in (self.token_file, self.tls_cert, self.tls_key, self.client_ca):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} does not exist; check the path given to the flag or config key")
        if self.token_file is not None:
            read_token(self.token_file)
        if not 0 < self.idle_timeout <= 86_400:  # also refuses nan and infinity
            raise ValueError(f"idle_timeout (--idle-timeout) must be more than 0 and at most 86400 s, got {self.idle_timeout}")
        if not 0 <= self.grace_seconds <= 86_400:
            raise ValueError(f"grace (--grace) must be 0 to 86400 s, got {self.grace_seconds}")
        check_worker_python(*self.worker_interpreter())
        for name, flag, value in (
            ("max_streams_per_client", "--max-streams-per-client", self.max_streams_per_client),
            ("max_queue", "--max-queue", self.max_queue),
            ("keep_runs", "--keep-runs", self.keep_runs),
        ):
            if value < 1:
                raise ValueError(f"{name} ({flag}) must be at least 1, got {value}")
        # Given in MB, held in bytes: checked and reported in MB, the unit the user gave them in.
        for name, flag, value, least, allowed in (
            ("max_artifact_mb", "--max-artifact-mb", self.limits.max_artifact_bytes, 1, "1"),
            ("quota_mb", "--quota-mb", self.limits.quota_bytes, 1, "1"),
            ("memory_limit_mb", "--memory-limit-mb", self.memory_limit_bytes, 0, "0 (no limit)"),
        ):
            if not least << 20 <= value <= MAX_MB << 20:
                raise ValueError(f"{name} ({flag}) must be {allowed} to {MAX_MB} MB, got {_in_mb(value)}")

    def worker_interpreter(self) -> tuple[str, str]:
        """The interpreter benchmark workers run with, and where it was given (the name errors use): the flag or
        TOML key ``worker_python``, else the environment variable :data:`WORKER_PYTHON_ENV`, else this Python."""
        if self.worker_python is not None:
            return self.worker_python, "worker_python"
        from_env = os.environ.get(WORKER_PYTHON_ENV)
        if from_env is not None:
            return from_env, WORKER_PYTHON_ENV
        return sys.executable, "the agent's Python"

    @property
    def authenticated_by_certificate(self) -> bool:
        return self.client_ca is not None


def check_worker_python(python: str, source: str) -> None:
    """The workers' interpreter, wherever it was given (the ``worker_python`` key or flag, the environment
    variable): a non-empty string naming an executable, found as the workers will be started.

    Raises:
        ValueError: naming ``source`` and the value.
    """
    if not isinstance(python, str) or not python.strip():
        raise ValueError(f"{source} must be a non-empty string (the path of a Python), got {python!r}")
    if shutil.which(python) is None:
        unset = f", or unset {source}" if source == WORKER_PYTHON_ENV else ""
        raise ValueError(f"{source} {python!r} is not an executable; give the path of a Python{unset}")


def _in_mb(value: int) -> str:
    """Bytes as the MB figure they were given as (exact when whole, as from a flag or config key)."""
    return str(value >> 20) if value % (1 << 20) == 0 else f"{value / (1 << 20):g}"


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
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        store.mkdir(parents=True, exist_ok=True)
    value = uuid.uuid4().hex[:16]
    write_durably(path, (value + "\n").encode())  # appears whole or not at all
    return value


def check_store_dir(store: Path) -> None:
    """Create the store (0700) or refuse one another user could have prepared or can write to.

    Raises:
        ValueError: naming the problem and the fix.
    """
    with contextlib.suppress(FileExistsError):
        store.mkdir(mode=0o700, parents=True)
    info = os.lstat(store)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"the store {store} must be a directory, not a symlink or a file")
    if info.st_uid != os.geteuid():
        raise ValueError(
            f"the store {store} belongs to uid {info.st_uid}, not to this agent's user (uid {os.geteuid()}): another "
            "user may have prepared it; use a directory of your own (e.g. ~/edge-store or /var/lib/edge-agent)"
        )
    if info.st_mode & 0o022:
        raise ValueError(f"the store {store} is writable by other users; run: chmod go-w {store}")


class StoreLock:
    """An exclusive ``flock`` on the store directory itself (released by the kernel if the agent dies).

    Locking the directory, not a file in it, means no file can be removed to sneak a second agent in;
    ``<store>/agent.pid`` only names the holder for the error message.
    """

    def __init__(self, store: Path) -> None:
        self._fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        pid_file = store / "agent.pid"
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            try:
                holder = pid_file.read_text().strip()[:16] or "?"
            except OSError:
                holder = "?"
            raise StoreLocked(
                f"another edge-agent (pid {holder}) is using the store {store}; stop it or give this one another --store"
            ) from None
        fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def resolve_token(config: AgentConfig) -> tuple[str | None, str]:
    """The token clients must present (None only with --insecure or mTLS) and a sentence saying where it is."""
    if config.token_file is not None:
        return read_token(config.token_file), f"token from {config.token_file}"
    if config.insecure:
        return None, "NO authentication (--insecure)"
    if config.authenticated_by_certificate:
        return None, "client certificates (mTLS)"
    path, created = ensure_token(config.store)
    verb = "created" if created else "kept"
    return read_token(path), f"token in {path} ({verb} by the agent; give it to clients with --token-file)"


@dataclass
class Agent:
    """A running agent; its server lives on ``loop`` (a thread of its own, or the main thread under :func:`serve`)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
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


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (systemd gives services a soft 1,024) and return it:
    each connection costs a descriptor, and a thousand idle connections from anyone must not leave none for the
    listener, the store and the workers' pipes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(config: AgentConfig) -> int:
    """Run until SIGTERM, SIGINT or SIGHUP; returns the exit code (0 after a graceful stop)."""
    os.umask(0o077)  # the daemon's files (artifacts, journal, token) are its user's alone
    _LOGGER.info("open files allowed: %d", raise_open_file_limit())
    return asyncio.run(_serve(config))


async def _serve(config: AgentConfig) -> int:
    agent = await start_agent(config)
    line = start_line(config, agent)
    _LOGGER.info("%s", line)
    print(line, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP (a closed terminal or ssh session, an operator's "reload") stops as gracefully as SIGTERM.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    _LOGGER.info("shutting down (grace %.0f s): no new runs, queued runs end INTERRUPTED", config.grace_seconds)
    await agent.stop(config.grace_seconds)
    return 0
