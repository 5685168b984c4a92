"""The host SDK: what a host (a laptop, CI, the toolchain, the fleet) uses to drive one device.

The gRPC client, the ``edge-agent`` host commands (info, push, bench, runs, get, list, delete), the reader of a
user's model file, and the push → skip-if-present → bench → triage session every caller goes through. It
stands on :mod:`edge_agent.contract` and :mod:`edge_agent.runtimes` and never imports the daemon's store, run
manager or service.
"""

from __future__ import annotations
