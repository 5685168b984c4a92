"""``edge-agent``: the device daemon (``serve``) and the host's commands for talking to one device.

Device side:   serve, check-config, version
Host side:     info, push, bench, runs, get, list, delete   (--device HOST:PORT, credentials, --json)

Argparse only: nothing here may pull a dependency onto a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.result import EXIT_PARTIAL, ResultError, envelope

EXAMPLES = """\
examples:
  on the device:
    edge-agent serve --store ~/edge-agent --token-file ~/.edge-agent-token                 (127.0.0.1:50051)
    edge-agent serve --listen 0.0.0.0:50051 --tls-cert c.pem --tls-key k.pem --token-file t  (network, TLS)
  from the host:
    edge-agent info --device pi.local:50051 --token-file t --tls-ca ca.pem
    edge-agent push artifacts/smallcnn-int8-onnx --device 127.0.0.1:50051 --token-file t
    edge-agent bench artifacts/smallcnn-int8-onnx --threads 1 --iterations 200 --device ... --json
    edge-agent get RUN_ID --device ...        a past run from the device's journal
"""
#: Exit codes of the host commands: 0 ok, 1 a bad argument or file, 2 usage, 7 the device cannot be reached or
#: refused the call, 8 (EXIT_PARTIAL) a benchmark ran but failed on the device.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DEVICE = 7


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with the same keys as these flags (flags win)")
    parser.add_argument("--listen", help="address:port (default 127.0.0.1:50051; port 0 picks a free one)")
    parser.add_argument("--store", type=Path, help="artifact store and results journal folder")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token clients must present (default: STORE/token, created on first start)",
    )
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument("--client-ca", type=Path, help="CA whose client certificates are required (mTLS)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="no token (unless --token-file) and plaintext allowed on any address: only on a network you trust",
    )
    parser.add_argument("--max-queue", type=int, help="runs allowed to wait (default 16)")
    parser.add_argument("--max-artifact-mb", type=int, help="largest artifact accepted (default 512)")
    parser.add_argument("--quota-mb", type=int, help="store quota (default 4096)")
    parser.add_argument("--grace", type=float, help="seconds a running benchmark may finish on SIGTERM (default 30)")
    parser.add_argument("--memory-limit-mb", type=int, help="address-space limit of each benchmark worker (default none)")
    parser.add_argument("--idle-timeout", type=float, help="seconds a silent client stream is kept open (default 30)")
    parser.add_argument("--max-streams-per-client", type=int, help="open streams one client address may hold (default 32)")


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", required=True, help="the agent's HOST:PORT")
    parser.add_argument("--token-file", type=Path, help="bearer token file (or EDGE_AGENT_TOKEN)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate that signed the agent's certificate")
    parser.add_argument("--tls-cert", type=Path, help="client certificate for mTLS")
    parser.add_argument("--tls-key", type=Path, help="client key for mTLS")
    parser.add_argument("--server-name", help="expected name in the agent's certificate (if not the host)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call in seconds (default 30)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    # Unset flags take the agent's defaults; 0 is a value (--min-seconds 0: no minimum time).
    parser.add_argument("--batch-size", type=int, help="default 1")
    parser.add_argument("--threads", type=int, help="default 1")
    parser.add_argument("--warmup-runs", type=int, help="default 10 (0: none)")
    parser.add_argument("--warmup-seconds", type=float, help="minimum warm-up time, default 0.5")
    parser.add_argument("--iterations", type=int, help="default 100")
    parser.add_argument("--min-seconds", type=float, help="minimum measuring time, default 1.0")
    parser.add_argument("--run-timeout", type=float, help="worker timeout in seconds, default 600")
    parser.add_argument("--graph-opt", choices=["disable", "basic", "extended", "all"], help="onnxruntime graph optimisation")
    parser.add_argument("--keep-samples", action="store_true", help="return the latency samples (at most 20,000, evenly spaced)")


def bench_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "batch_size": args.batch_size,
        "threads": args.threads,
        "warmup_runs": args.warmup_runs,
        "warmup_min_seconds": args.warmup_seconds,
        "iterations": args.iterations,
        "min_seconds": args.min_seconds,
        "timeout_seconds": args.run_timeout,
        "keep_samples": args.keep_samples,
    }
    if args.graph_opt:
        settings["graph_optimization"] = f"GRAPH_OPT_{args.graph_opt.upper()}"
    return {k: v for k, v in settings.items() if v is not None and v is not False}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    _add_client_options(info)
    push = sub.add_parser("push", help="push artifact folders (only what the device lacks)")
    push.add_argument("artifacts", nargs="+", type=Path)
    _add_client_options(push)
    bench = sub.add_parser("bench", help="push if needed, then benchmark on the device")
    bench.add_argument("artifacts", nargs="+", type=Path)
    bench.add_argument("--run-id", help="idempotency key (one artifact only)")
    add_bench_options(bench)
    _add_client_options(bench)
    runs = sub.add_parser("runs", help="runs in the device's journal")
    runs.add_argument("--after-seq", type=int, default=0)
    _add_client_options(runs)
    get = sub.add_parser("get", help="one run from the device's journal")
    get.add_argument("run_id")
    _add_client_options(get)
    listing = sub.add_parser("list", help="artifacts on the device")
    _add_client_options(listing)
    delete = sub.add_parser("delete", help="delete an artifact from the device")
    delete.add_argument("sha256")
    _add_client_options(delete)
    return parser


def agent_config(args: argparse.Namespace) -> Any:
    from edge_agent.server import AgentConfig
    from edge_agent.store import StoreLimits

    raw: dict[str, Any] = {}
    if args.config:
        raw = tomllib.loads(args.config.read_text(encoding="utf-8"))
    flags = {
        "listen": args.listen,
        "store": args.store,
        "token_file": args.token_file,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "client_ca": args.client_ca,
        "insecure": args.insecure,
        "max_queue": args.max_queue,
        "grace_seconds": args.grace,
        "memory_limit_bytes": args.memory_limit_mb << 20 if args.memory_limit_mb else None,
        "idle_timeout": args.idle_timeout,
        "max_streams_per_client": args.max_streams_per_client,
    }
    raw.update({k: v for k, v in flags.items() if v is not None})
    limits = StoreLimits()
    if args.max_artifact_mb or raw.get("max_artifact_mb"):
        limits = replace(limits, max_artifact_bytes=int(args.max_artifact_mb or raw.pop("max_artifact_mb")) << 20)
    if args.quota_mb or raw.get("quota_mb"):
        limits = replace(limits, quota_bytes=int(args.quota_mb or raw.pop("quota_mb")) << 20)
    raw.pop("max_artifact_mb", None)
    raw.pop("quota_mb", None)
    known = {f.name for f in fields(AgentConfig)} - {"limits"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    for key in ("store", "token_file", "tls_cert", "tls_key", "client_ca"):
        if raw.get(key) is not None:
            raw[key] = Path(raw[key]).expanduser()
    if "store" not in raw:
        raw["store"] = Path(os.environ.get("EDGE_AGENT_STORE", "~/.local/share/edge-agent")).expanduser()
    return AgentConfig(**raw, limits=limits)


def make_client(args: argparse.Namespace) -> Any:
    from edge_agent.client import AgentClient, Credentials

    creds = Credentials.from_files(
        args.token_file, args.tls_ca, args.tls_cert, args.tls_key, args.server_name, token=os.environ.get("EDGE_AGENT_TOKEN")
    )
    return AgentClient(args.device, creds, timeout=args.timeout)


def _envelope(args: argparse.Namespace, payload: Any, exit_code: int, errors: list[ResultError]) -> str:
    return json.dumps(envelope(args.command, payload, errors, exit_code), indent=2)


def _print(args: argparse.Namespace, payload: Any, human: str, exit_code: int = 0, errors: list | None = None) -> None:
    if getattr(args, "json", False):
        print(_envelope(args, payload, exit_code, errors or []))
    else:
        print(human)


def _fail(args: argparse.Namespace, code: int, error_code: str, message: str) -> int:
    """One line on stderr; with --json also the envelope on stdout."""
    print(f"edge-agent: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(_envelope(args, None, code, [{"code": error_code, "message": message}]))
    return code


def format_result_line(name: str, event: dict[str, Any]) -> str:
    if "result" in event:
        r = event["result"]
        lat = r["latency"]
        flag = "  DISTURBED: " + "; ".join(r.get("warnings", [])) if r.get("disturbed") else ""
        return (
            f"{name}: p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f}  p99 {lat['p99_ms']:.3f}  "
            f"mean {lat['mean_ms']:.3f}±{lat['std_ms']:.3f}  n={lat['count']}  {lat['throughput_per_s']:.1f}/s  "
            f"load {r['load_seconds']:.2f}s  first {r['first_inference_ms']:.2f} ms  "
            f"peak RSS {int(r['peak_rss_bytes']) / 2**20:.0f} MiB{flag}"
        )
    err = event.get("error", {})
    state = str(event.get("state", "FAILED")).removeprefix("RUN_STATE_")
    return f"{name}: {state} {err.get('code', '')}: {err.get('message', '')}"


def _client_command(args: argparse.Namespace) -> int:
    from edge_agent.client import DeviceCallError

    try:
        with make_client(args) as client:
            return _dispatch_client(args, client)
    except DeviceCallError as exc:
        return _fail(args, EXIT_DEVICE, exc.code, str(exc))
    except (ValueError, OSError) as exc:
        return _fail(args, EXIT_ERROR, "ERROR", str(exc))


def _dispatch_client(args: argparse.Namespace, client: Any) -> int:
    if args.command == "info":
        info = client.info()
        human = "\n".join(f"{k}: {v}" for k, v in info.items())
        _print(args, info, human)
    elif args.command == "list":
        artifacts = client.list_artifacts()
        _print(
            args,
            artifacts,
            "\n".join(
                f"{a['sha256'][:16]}  {a['format']:<11} {a['precision']:<4} {a['size_bytes']:>10}  {a['name']}" for a in artifacts
            )
            or "(no artifacts)",
        )
    elif args.command == "delete":
        _print(args, {"deleted": client.delete(args.sha256)}, f"deleted {args.sha256}")
    elif args.command == "get":
        run = client.get_run(args.run_id)
        _print(args, run, format_result_line(run["run_id"], run) + f"  [{run['state'].removeprefix('RUN_STATE_')}]")
    elif args.command == "runs":
        runs = client.list_runs(args.after_seq)
        _print(
            args,
            runs,
            "\n".join(
                f"{r['seq']:>6} {r['run_id']}  {r['state'].removeprefix('RUN_STATE_'):<12} {r['sha256'][:16]}" for r in runs
            )
            or "(no runs)",
        )
    elif args.command == "push":
        outcomes = [client.push(folder) for folder in args.artifacts]
        _print(
            args,
            [o.__dict__ for o in outcomes],
            "\n".join(
                f"{o.name}: {'already on the device' if o.already_present else f'pushed {o.bytes_sent} bytes'}"
                + (f" (resumed at {o.resumed_from})" if o.resumed_from else "")
                for o in outcomes
            ),
        )
    elif args.command == "bench":
        return _bench(args, client)
    return 0


def _bench(args: argparse.Namespace, client: Any) -> int:
    if args.run_id and len(args.artifacts) > 1:
        raise ValueError("--run-id names one run: give one artifact")
    settings = bench_settings(args)
    results = []
    failed = False
    for folder in args.artifacts:
        pushed = client.push(folder)
        last: dict[str, Any] = {}
        for event in client.bench(pushed.sha256, settings, run_id=args.run_id):
            last = event
            if not args.json and "progress" in event:
                p = event["progress"]
                print(f"\r{folder.name}: {p['phase']} {p['done']}/{p['total']}   ", end="", file=sys.stderr, flush=True)
            elif not args.json and "queue_position" in event:
                print(f"{folder.name}: queued (position {event['queue_position']})", file=sys.stderr)
        if not args.json:
            print("\r", end="", file=sys.stderr)
            print(format_result_line(folder.name, last))
        failed |= "result" not in last
        results.append({"artifact": str(folder), "sha256": pushed.sha256, **last})
    code = EXIT_PARTIAL if failed else 0
    if args.json:
        failures = [(r["artifact"], r.get("error", {})) for r in results if "result" not in r]
        errors = [{"code": e.get("code", "FAILED"), "message": f"{a}: {e.get('message', '')}"} for a, e in failures]
        _print(args, results, "", code, errors)
    return code


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
        from edge_agent.errors import StoreLocked
        from edge_agent.server import serve

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
    return _client_command(args)


if __name__ == "__main__":
    sys.exit(main())
