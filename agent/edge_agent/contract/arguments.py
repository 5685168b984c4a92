"""The command-line parser of every edge-opt command: a usage mistake is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from edge_agent.contract.result import EXIT_USAGE


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line naming the problem and where help is (its
    subcommands' parsers are of this class too). Flags are never abbreviated: a mistyped or future flag is an
    error, not silently taken for another one (``--data`` is not ``--data-dir``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)
