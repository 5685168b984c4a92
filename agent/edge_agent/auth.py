"""Bearer-token authentication (a server interceptor) and TLS / mTLS credentials.

Every method except ``grpc.health.v1.Health`` needs ``authorization: Bearer <token>``; the interceptor rejects
anything else with UNAUTHENTICATED before the handler runs (so nothing is read or written). Tokens are compared
with :func:`hmac.compare_digest` and never logged or echoed in status details.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

AUTH_METADATA_KEY = "authorization"
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/",)


def read_token(path: Path) -> str:
    """The first line of a token file; refuses short tokens."""
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise ValueError(f"token file {path} must hold a token of at least 16 characters")
    return token


def tokens_match(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


class TokenAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token
        self._denied = {
            "unary_unary": grpc.unary_unary_rpc_method_handler(self._deny),
            "unary_stream": grpc.unary_stream_rpc_method_handler(self._deny),
            "stream_unary": grpc.stream_unary_rpc_method_handler(self._deny),
            "stream_stream": grpc.stream_stream_rpc_method_handler(self._deny),
        }

    @staticmethod
    def _deny(_request: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(UNAUTHENTICATED_PREFIXES):
            return continuation(details)
        presented = ""
        for key, value in details.invocation_metadata or ():
            if key == AUTH_METADATA_KEY and isinstance(value, str) and value.startswith("Bearer "):
                presented = value[len("Bearer ") :]
        if presented and tokens_match(presented, self._token):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None
        kind = ("stream" if handler.request_streaming else "unary") + "_" + ("stream" if handler.response_streaming else "unary")
        return self._denied[kind]


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS; with ``client_ca`` also mTLS (clients must present a certificate that CA signed)."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )
