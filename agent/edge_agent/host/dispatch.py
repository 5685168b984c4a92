"""``edge-agent``'s host commands run: info, push, runs, get, list and delete on one device through
:class:`edge_agent.host.client.AgentClient`, ``bench`` through :mod:`edge_agent.host.bench`; every failure is one
line on stderr (and the JSON envelope with ``--json``) and its exit code."""

from __future__ import annotations

import argparse

from edge_agent.contract.result import EXIT_DATA, EXIT_DEVICE, EXIT_ERROR, EXIT_USAGE
from edge_agent.host.bench import bench_command
from edge_agent.host.client import AgentClient, DeviceCallError
from edge_agent.host.commands import make_client
from edge_agent.host.output import DataProblem, UsageError, fail, format_result_line, print_result


def run_host_command(args: argparse.Namespace) -> int:
    try:
        if args.command == "bench":
            return bench_command(args)  # its arguments are checked before a client exists
        with make_client(args) as client:
            return _dispatch_client(args, client)
    except DeviceCallError as exc:
        return fail(args, EXIT_DEVICE, exc.code, str(exc))
    except UsageError as exc:
        return fail(args, EXIT_USAGE, "USAGE", str(exc))
    except DataProblem as exc:
        return fail(args, EXIT_DATA, "data", str(exc))
    except (ValueError, OSError) as exc:
        return fail(args, EXIT_ERROR, "ERROR", str(exc))


def _dispatch_client(args: argparse.Namespace, client: AgentClient) -> int:
    if args.command == "info":
        info = client.info()
        human = "\n".join(f"{k}: {v}" for k, v in info.items())
        print_result(args, info, human)
    elif args.command == "list":
        artifacts = client.list_artifacts()
        print_result(
            args,
            artifacts,
            "\n".join(
                f"{a['sha256'][:16]}  {a['format']:<11} {a['precision']:<4} {a['size_bytes']:>10}  {a['name']}" for a in artifacts
            )
            or "(no artifacts)",
        )
    elif args.command == "delete":
        print_result(args, {"deleted": client.delete(args.sha256)}, f"deleted {args.sha256}")
    elif args.command == "get":
        run = client.get_run(args.run_id)
        print_result(args, run, format_result_line(run["run_id"], run) + f"  [{run['state'].removeprefix('RUN_STATE_')}]")
    elif args.command == "runs":
        runs = client.list_runs(args.after_seq)
        print_result(
            args,
            runs,
            "\n".join(
                f"{r['seq']:>6} {r['run_id']}  {r['state'].removeprefix('RUN_STATE_'):<12} {r['sha256'][:16]}" for r in runs
            )
            or "(no runs)",
        )
    elif args.command == "push":
        outcomes = [client.push(folder) for folder in args.artifacts]
        print_result(
            args,
            [o.__dict__ for o in outcomes],
            "\n".join(
                f"{o.name}: {'already on the device' if o.already_present else f'pushed {o.bytes_sent} bytes'}"
                + (f" (resumed at {o.resumed_from})" if o.resumed_from else "")
                for o in outcomes
            ),
        )
    return 0
