"""``edge-agent``: the device daemon (``serve``) and the host's commands for talking to one device.

Device side:   serve, check-config, version
Host side:     info, push, bench, runs, get, list, delete   (--device HOST:PORT, credentials, --json)

Argparse only: nothing here may pull a dependency onto a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.contract.arguments import ArgumentParser
from edge_agent.contract.result import EXIT_ERROR, EXIT_USAGE
from edge_agent.host.commands import (
    add_bench_options,
    add_client_options,
    add_data_options,
    add_model_file_options,
    run_host_command,
)

EXAMPLES = """\
examples:
  on the device:
    edge-agent serve --store ~/edge-agent --token-file ~/.edge-agent-token                 (127.0.0.1:50051)
    edge-agent serve --listen 0.0.0.0:50051 --tls-cert c.pem --tls-key k.pem --token-file t  (network, TLS)
  from the host:
    edge-agent info --device pi.local:50051 --token-file t --tls-ca ca.pem
    edge-agent push artifacts/smallcnn-int8-onnx --device 127.0.0.1:50051 --token-file t
    edge-agent bench artifacts/smallcnn-int8-onnx --threads 1 --iterations 200 --device ... --json
    edge-agent bench model.onnx --device ... --token-file t    any .onnx / .pte as it is (--input-shape 1x3x224x224
                                                               fixes dynamic dimensions)
    edge-agent get RUN_ID --device ...        a past run from the device's journal
"""


def _path(value: str) -> Path:
    """A path flag: an empty value is a mistake (it would silently mean the current folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path; give a path, or leave the flag out for the default")
    return Path(value)


def _add_server_options(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="edge-agent",
        description="edge-opt device agent: serve benchmarks on a device, or talk to one from the host.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the agent daemon")
    _add_server_options(serve)
    check = sub.add_parser("check-config", help="validate the daemon's settings without starting it")
    _add_server_options(check)
    sub.add_parser("version", help="print the agent version")
    info = sub.add_parser("info", help="what the device is and has")
    add_client_options(info)
    push = sub.add_parser("push", help="push artifact folders (only what the device lacks)")
    push.add_argument("artifacts", nargs="+", type=Path)
    add_client_options(push)
    bench = sub.add_parser("bench", help="push if needed, then benchmark on the device")
    bench.add_argument(
        "artifacts", nargs="+", type=Path, metavar="ARTIFACT", help="artifact folders (edge-export's), model files (.onnx, .pte)"
    )
    bench.add_argument("--run-id", help="idempotency key (one artifact only)")
    add_bench_options(bench)
    add_model_file_options(bench)
    add_data_options(bench)
    add_client_options(bench)
    runs = sub.add_parser("runs", help="runs in the device's journal")
    runs.add_argument("--after-seq", type=int, default=0)
    add_client_options(runs)
    get = sub.add_parser("get", help="one run from the device's journal")
    get.add_argument("run_id")
    add_client_options(get)
    listing = sub.add_parser("list", help="artifacts on the device")
    add_client_options(listing)
    delete = sub.add_parser("delete", help="delete an artifact from the device")
    delete.add_argument("sha256")
    add_client_options(delete)
    return parser


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


_LOGGER = logging.getLogger("edge_agent.cli")

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
        name = {Path: "a path (a non-empty string)", str: "a non-empty string"}.get(kind, kind.__name__)
        raise ValueError(f"config key {key!r} must be {name}, got {value!r}")
    return kind(value)


def agent_config(args: argparse.Namespace) -> Any:
    """The daemon's settings from ``--config`` (TOML, the keys of :data:`SERVER_KEYS`) and the flags (which win).

    Raises:
        ValueError: an unknown key or a value of the wrong type, naming it.
    """
    from edge_agent.service.server import AgentConfig
    from edge_agent.store.catalogue import StoreLimits

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The daemon's log lines carry its version: the one line at start then names version, listen address and store.
    origin = f"%(name)s {__version__}" if args.command == "serve" else "%(name)s"
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format=f"%(asctime)s %(levelname)s {origin}: %(message)s"
    )
    if args.command == "version":
        print(f"edge-agent {__version__}")
        return 0
    if args.command in ("serve", "check-config"):
        from edge_agent.contract.errors import StoreLocked
        from edge_agent.service.server import serve

        try:
            config = agent_config(args)
            config.check()
        except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
            print(f"edge-agent: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.command == "check-config":
            print(f"edge-agent: config ok (listen {config.listen}, store {config.store})")
            return 0
        try:
            return serve(config)
        except (OSError, ValueError, StoreLocked) as exc:
            print(f"edge-agent: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
    return run_host_command(args)


if __name__ == "__main__":
    sys.exit(main())
