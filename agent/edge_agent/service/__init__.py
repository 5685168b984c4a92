"""The daemon's gRPC side: the servicer (protobuf ↔ store and runs, errors → status codes), the server
(transport options, interceptors, health), authentication, the store lock and the signal-driven main loop."""

from __future__ import annotations
