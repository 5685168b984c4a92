"""The store's directory checked and locked for the agent's lifetime (a second agent on the same store refuses to
start instead of corrupting the first one's journal and staging files), and the device id kept in it."""


from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import uuid
from pathlib import Path

from edge_agent.contract.errors import StoreLocked
from edge_agent.contract.files import write_durably


def device_id_for(store: Path) -> str:
    """A stable id per store: written once, kept across restarts."""
    path = store / "device_id"
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        store.mkdir(parents=True, exist_ok=True)
    value = uuid.uuid4().hex[:16]
    write_durably(path, (value + "\n").encode())  # appears whole or not at all
    return value


def check_store_dir(store: Path) -> None:
    """Create the store (0700) or refuse one another user could have prepared or can write to.

    Raises:
        ValueError: naming the problem and the fix.
    """
    with contextlib.suppress(FileExistsError):
        store.mkdir(mode=0o700, parents=True)
    info = os.lstat(store)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"the store {store} must be a directory, not a symlink or a file")
    if info.st_uid != os.geteuid():
        raise ValueError(
            f"the store {store} belongs to uid {info.st_uid}, not to this agent's user (uid {os.geteuid()}): another "
            "user may have prepared it; use a directory of your own (e.g. ~/edge-store or /var/lib/edge-agent)"
        )
    if info.st_mode & 0o022:
        raise ValueError(f"the store {store} is writable by other users; run: chmod go-w {store}")


class StoreLock:
    """An exclusive ``flock`` on the store directory itself (released by the kernel if the agent dies).

    Locking the directory, not a file in it, means no file can be removed to sneak a second agent in;
    ``<store>/agent.pid`` only names the holder for the error message.
    """

    def __init__(self, store: Path) -> None:
        self._fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        pid_file = store / "agent.pid"
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            try:
                holder = pid_file.read_text().strip()[:16] or "?"
            except OSError:
                holder = "?"
            raise StoreLocked(
                f"another edge-agent (pid {holder}) is using the store {store}; stop it or give this one another --store"
            ) from None
        fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
