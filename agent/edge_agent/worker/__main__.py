"""``python -m edge_agent.worker.main``: the worker's entry point (the run manager starts it so)."""

from __future__ import annotations

import sys

from edge_agent.worker.main.main import main

if __name__ == "__main__":
    sys.exit(main())
