"""Bearer-token authentication (a server interceptor) and TLS / mTLS credentials.

Every method except ``grpc.health.v1.Health`` needs ``authorization: Bearer <token>``; the interceptor rejects
anything else with UNAUTHENTICATED before the handler runs (so nothing is read or written); an unknown method is
UNIMPLEMENTED either way. Tokens are compared
with :func:`hmac.compare_digest` and never logged or echoed in status details. An agent started without a token
file makes its own (:func:`ensure_token`: ``<store>/token``, mode 0600) and says where it is; only ``--insecure``
runs an agent that accepts calls without a token.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from edge_agent.config import AgentConfig
from edge_agent.contract.tokens import read_token

AUTH_METADATA_KEY = "authorization"
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/",)


def tokens_match(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


def bearer_token(metadata: Any) -> str:
    """The bearer token a call presents in its metadata ("" for none)."""
    presented = ""
    for key, value in metadata or ():
        if key == AUTH_METADATA_KEY and isinstance(value, str) and value.startswith("Bearer "):
            presented = value[len("Bearer ") :]
    return presented


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call without the right bearer token (health excepted) before its handler is looked up."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._denied = {
            "unary_unary": grpc.unary_unary_rpc_method_handler(self._deny),
            "unary_stream": grpc.unary_stream_rpc_method_handler(self._deny_stream),
            "stream_unary": grpc.stream_unary_rpc_method_handler(self._deny),
            "stream_stream": grpc.stream_stream_rpc_method_handler(self._deny_stream),
        }

    @staticmethod
    async def _deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    @staticmethod
    async def _deny_stream(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        yield  # pragma: no cover - an async generator that aborts before yielding

    # grpc's stub says a handler is always returned; grpc passes None on for a method no servicer has.
    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(UNAUTHENTICATED_PREFIXES):
            return await continuation(details)
        presented = bearer_token(details.invocation_metadata)
        handler = await continuation(details)
        if handler is None or (presented and tokens_match(presented, self._token)):
            return handler
        kind = ("stream" if handler.request_streaming else "unary") + "_" + ("stream" if handler.response_streaming else "unary")
        return self._denied[kind]


def ensure_token(store: Path) -> tuple[Path, bool]:
    """The store's own token file, created on first use (0600, 256 random bits); returns (path, created)."""
    path = store / "token"
    store.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        # Written whole to a private temporary file, then linked into place: a crash never leaves an empty token.
        tmp = store / f".token.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
            return path, True
        except FileExistsError:
            pass  # another start made one at the same moment: use it
        finally:
            tmp.unlink(missing_ok=True)
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} must be a regular file holding the agent's token")
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ValueError(
            f"{path} must belong to this agent's user and be readable by it alone (chmod 600); "
            "otherwise another user may know or have chosen the token: remove it and restart"
        )
    read_token(path)
    return path, False


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS; with ``client_ca`` also mTLS (clients must present a certificate that CA signed)."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


def resolve_token(config: AgentConfig) -> tuple[str | None, str]:
    """The token clients must present (None only with --insecure or mTLS) and a sentence saying where it is."""
    if config.token_file is not None:
        return read_token(config.token_file), f"token from {config.token_file}"
    if config.insecure:
        return None, "NO authentication (--insecure)"
    if config.authenticated_by_certificate:
        return None, "client certificates (mTLS)"
    path, created = ensure_token(config.store)
    verb = "created" if created else "kept"
    return read_token(path), f"token in {path} ({verb} by the agent; give it to clients with --token-file)"
