"""The agent attacked as a daemon: see README.md, Development."""

from __future__ import annotations
