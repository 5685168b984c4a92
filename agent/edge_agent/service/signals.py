"""The daemon's main loop: serve until SIGTERM, SIGINT or SIGHUP, then stop gracefully (health NOT_SERVING, no
new runs, queued runs INTERRUPTED, the running one gets the grace period) and exit 0."""


from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal

from edge_agent.config import AgentConfig
from edge_agent.service.server import start_agent, start_line

_LOGGER = logging.getLogger(__name__)


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (systemd gives services a soft 1,024) and return it:
    each connection costs a descriptor, and a thousand idle connections from anyone must not leave none for the
    listener, the store and the workers' pipes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(config: AgentConfig) -> int:
    """Run until SIGTERM, SIGINT or SIGHUP; returns the exit code (0 after a graceful stop)."""
    os.umask(0o077)  # the daemon's files (artifacts, journal, token) are its user's alone
    _LOGGER.info("open files allowed: %d", raise_open_file_limit())
    return asyncio.run(_serve(config))


async def _serve(config: AgentConfig) -> int:
    agent = await start_agent(config)
    line = start_line(config, agent)
    _LOGGER.info("%s", line)
    print(line, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP (a closed terminal or ssh session, an operator's "reload") stops as gracefully as SIGTERM.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    _LOGGER.info("shutting down (grace %.0f s): no new runs, queued runs end INTERRUPTED", config.grace_seconds)
    await agent.stop(config.grace_seconds)
    return 0
