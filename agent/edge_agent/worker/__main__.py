"""``python -m edge_agent.worker``: the worker's entry point, as ``python -m edge_agent.worker.main`` (how the run
manager starts it)."""

from __future__ import annotations

import sys

from edge_agent.worker.main import main

if __name__ == "__main__":
    sys.exit(main())
