"""The agent's one typed config: ``edge-agent serve`` / ``check-config`` flags, the ``--config`` TOML file and the
environment (``EDGE_AGENT_STORE``, ``EDGE_AGENT_WORKER_PYTHON``) all become one :class:`AgentConfig`, checked in
one place (:meth:`AgentConfig.check`, which ``check-config`` runs without starting anything).

A new setting is a field of :class:`AgentConfig` (with its check), its flag in :func:`add_server_options` and its
key in :data:`SERVER_KEYS`, all in this module.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from edge_agent.contract.tokens import read_token
from edge_agent.runs.journal import DEFAULT_KEEP_RUNS
from edge_agent.store.records import StoreLimits

_LOGGER = logging.getLogger(__name__)


class InsecureBindError(ValueError):
    pass


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


def _path(value: str) -> Path:
    """A path flag: an empty value is a mistake (it would silently mean the current folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path; give a path, or leave the flag out for the default")
    return Path(value)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=_path, help="TOML file with the same keys as these flags (flags win)")
    parser.add_argument("--listen", help="address:port (default 127.0.0.1:50051; port 0 picks a free one)")
    parser.add_argument("--store", type=_path, help="artifact store and results journal folder")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token clients must present (default: STORE/token, created on first start)",
    )
    parser.add_argument("--tls-cert", type=_path, help="server certificate (PEM)")
    parser.add_argument("--tls-key", type=_path, help="server private key (PEM)")
    parser.add_argument("--client-ca", type=_path, help="CA whose client certificates are required (mTLS)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="no token (unless --token-file) and plaintext allowed on any address: only on a network you trust",
    )
    parser.add_argument("--max-queue", type=int, help="runs allowed to wait (default 16)")
    parser.add_argument("--max-artifact-mb", type=int, help="largest artifact accepted, in MB (1 to 16777216; default 512)")
    parser.add_argument("--quota-mb", type=int, help="store quota, in MB (1 to 16777216; default 4096)")
    parser.add_argument("--grace", type=float, help="seconds a running benchmark may finish on SIGTERM (default 30)")
    parser.add_argument(
        "--memory-limit-mb", type=int, help="address-space limit of each benchmark worker, in MB (0 to 16777216; default 0: none)"
    )
    parser.add_argument("--idle-timeout", type=float, help="seconds a silent client stream is kept open (default 30)")
    parser.add_argument("--max-streams-per-client", type=int, help="open streams one client address may hold (default 32)")
    parser.add_argument(
        "--keep-runs", type=int, help="finished runs the journal keeps; older ones are compacted away (default 200)"
    )


#: The daemon's settings: TOML key (the flag's name with underscores) → (type, where it goes in AgentConfig).
#: ``--config FILE`` takes exactly these keys; flags override them.
SERVER_KEYS: dict[str, tuple[type, str]] = {
    "listen": (str, "listen"),
    "store": (Path, "store"),
    "token_file": (Path, "token_file"),
    "tls_cert": (Path, "tls_cert"),
    "tls_key": (Path, "tls_key"),
    "client_ca": (Path, "client_ca"),
    "insecure": (bool, "insecure"),
    "max_queue": (int, "max_queue"),
    "max_artifact_mb": (int, "limits.max_artifact_bytes"),
    "quota_mb": (int, "limits.quota_bytes"),
    "grace": (float, "grace_seconds"),
    "memory_limit_mb": (int, "memory_limit_bytes"),
    "idle_timeout": (float, "idle_timeout"),
    "max_streams_per_client": (int, "max_streams_per_client"),
    "keep_runs": (int, "keep_runs"),
    "worker_python": (str, "worker_python"),
}



#: Keys of earlier versions: old name → (its name now, the factor between them).
RENAMED_KEYS: dict[str, tuple[str, int]] = {"grace_seconds": ("grace", 1), "memory_limit_bytes": ("memory_limit_mb", 1 << 20)}


def _typed(key: str, value: Any) -> Any:
    kind = SERVER_KEYS[key][0]
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = type(value) is int
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str | Path)
    if not ok or (kind in (Path, str) and not str(value).strip()):
        names: dict[type, str] = {Path: "a path (a non-empty string)", str: "a non-empty string"}
        name = names.get(kind, kind.__name__)
        raise ValueError(f"config key {key!r} must be {name}, got {value!r}")
    return kind(value)


def agent_config(args: argparse.Namespace) -> AgentConfig:
    """The daemon's settings from ``--config`` (TOML, the keys of :data:`SERVER_KEYS`) and the flags (which win).

    Raises:
        ValueError: an unknown key or a value of the wrong type, naming it.
    """
    raw: dict[str, Any] = tomllib.loads(args.config.read_text(encoding="utf-8")) if args.config else {}
    for old, (new, scale) in RENAMED_KEYS.items():  # files written for earlier versions keep working
        if old in raw:
            if new in raw:
                raise ValueError(f"config key {old!r} is the old name of {new!r}: give only {new!r}")
            value = raw.pop(old)
            raw[new] = value // scale if scale > 1 and type(value) is int else value
            _LOGGER.warning("config key %r is now %r; please rename it", old, new)
    unknown = sorted(set(raw) - set(SERVER_KEYS))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}; allowed: {', '.join(SERVER_KEYS)}")
    values = {key: _typed(key, value) for key, value in raw.items()}
    values.update({k: v for k in SERVER_KEYS if (v := getattr(args, k, None)) is not None})
    config: dict[str, Any] = {}
    limits = StoreLimits()
    for key, value in values.items():
        target = SERVER_KEYS[key][1]
        if key in ("max_artifact_mb", "quota_mb", "memory_limit_mb"):
            value = int(value) << 20
        if isinstance(value, Path):
            # Absolute: benchmark workers run in a scratch folder of their own, so a relative store would not resolve.
            value = value.expanduser().resolve()
        if target.startswith("limits."):
            limits = replace(limits, **{target.removeprefix("limits."): value})
        else:
            config[target] = value
    if "store" not in config:
        config["store"] = Path(os.environ.get("EDGE_AGENT_STORE", "~/.local/share/edge-agent")).expanduser().resolve()
    return AgentConfig(**config, limits=limits)
