"""Regenerate the committed gRPC / protobuf Python code from protos/ (needs the dev extra: grpcio-tools).

python scripts/gen_protos.py            # writes agent/edge_agent/v1/agent_pb2{,_grpc}.py and .pyi
python scripts/gen_protos.py --out DIR  # writes into DIR instead (the freshness test compares the two)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
PROTOS = ["edge_agent/v1/agent.proto"]


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # the dev extra pins grpcio-tools so the output is reproducible

    out.mkdir(parents=True, exist_ok=True)
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if protoc.main([*args, *PROTOS]) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out.rglob("*_pb2*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "agent")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))


if __name__ == "__main__":
    sys.exit(main())
