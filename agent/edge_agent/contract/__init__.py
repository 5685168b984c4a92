"""The contract both ends of the wire share: the daemon, the host SDK and the toolchain import it.

Formats, the manifest (one reader, one writer), the latency fields, patterns, benchmark settings, the agent's error classes, the
JSON result envelope and exit codes, durable writes and file chunking. Nothing here imports grpc's server,
torch, or another subpackage of the agent: it is the floor every other layer stands on.
"""

from __future__ import annotations
