"""Fixtures of the reliability suite: agents as subprocesses (always killed in teardown), a token, a small tmpfs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_helpers import TOKEN

from reliability.reliability_harness import Agent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def make_agent(tmp_path: Path, token_file: Path) -> Iterator[Callable[..., Agent]]:
    """make_agent(store=None, args=(), token=True, grace=2.0) -> a started Agent; every one is killed at the end."""
    agents: list[Agent] = []

    def make(store: Path | None = None, args=(), *, token: bool = True, grace: float = 2.0, start: bool = True) -> Agent:
        agent = Agent(store or tmp_path / "store", token_file=token_file if token else None, args=args, grace=grace)
        agents.append(agent)
        if start:
            agent.start()
        return agent

    yield make
    for agent in agents:
        agent.close()


def mount_tmpfs(path: Path, size: str) -> None:
    """A real small filesystem. In CI (CI=true) a failed mount fails the test; locally it skips it."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        message = f"cannot mount a tmpfs at {path} (needs root): {proc.stderr.strip()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """small_fs('96m') -> the mount point of a fresh tmpfs of that size (unmounted at the end)."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        path = tmp_path / f"tmpfs-{len(mounts)}"
        mount_tmpfs(path, size)
        mounts.append(path)
        return path

    yield make
    for path in reversed(mounts):
        unmount(path)
