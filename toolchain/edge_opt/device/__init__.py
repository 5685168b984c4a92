"""One device (an edge-agent) seen from the host: push and benchmark an export's artifacts, and the pick: rounds
of benchmarks on the device, the statistics over them and the rule that names the winner."""

from __future__ import annotations
