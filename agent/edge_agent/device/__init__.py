"""What the device is and what state it is in: CPU model and flags (:mod:`.cpu`, also read by the toolchain on
the host), device info and state read from /proc and /sys (:mod:`.info`)."""

from __future__ import annotations
