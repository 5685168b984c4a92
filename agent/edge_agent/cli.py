"""``edge-agent``: the device daemon (``serve``) and the host's commands for talking to one device.

Device side:   serve, check-config, version
Host side:     info, push, bench, runs, get, list, delete   (--device HOST:PORT, credentials, --json)

Argparse only: nothing here may pull a dependency onto a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from edge_agent import __version__
from edge_agent.config import add_server_options, agent_config
from edge_agent.contract.arguments import ArgumentParser
from edge_agent.contract.errors import StoreLocked
from edge_agent.contract.result import EXIT_ERROR, EXIT_USAGE
from edge_agent.host.commands import add_bench_options, add_client_options, add_data_options, add_model_file_options
from edge_agent.host.dispatch import run_host_command

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
    add_server_options(serve)
    check = sub.add_parser("check-config", help="validate the daemon's settings without starting it")
    add_server_options(check)
    sub.add_parser("version", help="print the agent version")
    info = sub.add_parser("info", help="what the device is and has")
    add_client_options(info)
    push = sub.add_parser("push", help="push artifact folders (only what the device lacks)")
    push.add_argument("artifacts", nargs="+", type=Path)
    add_client_options(push)
    bench = sub.add_parser("bench", help="push if needed, then benchmark on the device")
    bench.add_argument(
        "artifacts",
        nargs="+",
        type=Path,
        metavar="ARTIFACT",
        help="artifact folders (edge-export's), model files (.onnx .pte .tflite)",
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
        # Imported here, not at the top: the host commands never load the daemon's gRPC server.
        from edge_agent.service.signals import serve

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
