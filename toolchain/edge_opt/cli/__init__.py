"""The toolchain's entry points: ``edge-export`` and ``edge-sweep`` (built from shared argument groups), and the one
runner that turns a command's work into output and exit codes (``command``); ``edge-fleet`` lives in
:mod:`edge_opt.fleet.cli`."""

from __future__ import annotations
