"""The daemon's artifact store: a content-addressed catalogue, quota and disk-space reservations, crash-safe
uploads (read-back hashing) and commits, and content checks of pushed files through the runtime registry."""

from __future__ import annotations
