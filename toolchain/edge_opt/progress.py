"""Progress bars and console output, on stderr so that ``--json`` output on stdout stays clean."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")

console = Console(stderr=True)
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn progress bars off (``--quiet``, ``--json`` into a pipe, tests)."""
    global _enabled
    _enabled = enabled


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (a no-op when progress is off or stderr is not a terminal)."""
    if not _enabled or not console.is_terminal:
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield from progress.track(items, total=total, description=description)


def status(message: str) -> None:
    """One line of what is happening now (stderr; silent when progress is off)."""
    if _enabled:
        console.print(f"[dim]•[/dim] {message}", highlight=False)


def live(message: str) -> None:
    """Overwrite one status line in place (terminals only; an empty message clears it)."""
    if _enabled and console.is_terminal:
        console.file.write("\r\x1b[2K" + message[: max(10, console.width - 1)])
        console.file.flush()
