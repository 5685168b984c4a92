"""The health service the agent registers: grpc's own, with bounded watches."""


from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2

from edge_agent.contract.errors import QuotaExceeded
from edge_agent.service.auth import bearer_token, tokens_match
from edge_agent.service.servicer import StreamSlots


class BoundedHealthServicer(health.aio.HealthServicer):  # type: ignore[name-defined]  # grpc-stubs lacks health.aio
    """grpc's health service. Its ``Watch`` streams are open to anyone (health needs no token), so unauthenticated
    watches have their own per-client and total limits, apart from authenticated calls', and a lifetime (the client
    watches again): they can neither fill the server nor take room from those who hold the token. A watch that
    presents the token counts as one of the token holder's streams instead."""

    def __init__(self, watch_slots: StreamSlots, call_slots: StreamSlots, lifetime: float, token: str | None) -> None:
        super().__init__()
        self._watch_slots = watch_slots
        self._call_slots = call_slots
        self._lifetime = lifetime
        self._token = token

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        presented = bearer_token(context.invocation_metadata())
        holder = bool(self._token and presented and tokens_match(presented, self._token))
        slots = self._call_slots if holder else self._watch_slots
        try:
            with slots.hold(context.peer()):
                await asyncio.wait_for(super().Watch(request, context), timeout=self._lifetime)
        except QuotaExceeded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"a health watch lasts {self._lifetime:g} s; watch again")
