"""What every request passes before a route sees it: the bearer token, then the body cap.

Plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so a streamed response (server-sent
events, a streamed completion) is passed through as it is written, never buffered.

- **Token.** A request that came over the server's own Unix socket needs none: the socket is mode
  0600 in a folder of mode 0700, so only its owner can connect, and that is the protection. Every
  other request (TCP, whatever the address) must carry ``Authorization: Bearer <token>``; a missing
  or wrong one is a 401, compared in constant time. Only the API's description (``/docs``,
  ``/openapi.json``) is public: it holds no data.
- **Body cap.** A body larger than the cap is refused with 413 before any route reads it (the
  declared length is checked first, then what actually arrives).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
MAX_BODY_BYTES = 1 << 20


async def send_error(send: Send, status: int, type_: str, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An error in the API's one shape, ``{"error": {"type", "message"}}``, from below the app."""
    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def came_over_socket(scope: Scope, socket_path: str | None) -> bool:
    """Whether the request arrived on our Unix socket: ASGI gives a Unix socket's server as
    ``[path, None]``. Anything else (TCP, a server we do not know) counts as the network."""
    server = scope.get("server")
    if socket_path is None or not server or len(server) != 2:
        return False
    return server[1] is None and str(server[0]) == socket_path


def token_matches(header: str | None, token: str | None) -> bool:
    if token is None or header is None:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class BearerAuth:
    def __init__(self, app: ASGIApp, *, token: str | None, socket_path: str | None) -> None:
        self.app = app
        self.token = token
        self.socket_path = socket_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or came_over_socket(scope, self.socket_path) \
                or scope.get("path") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        if token_matches(header, self.token):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        message = ("a bearer token is needed (Authorization: Bearer TOKEN; `smoltui serve token` shows it)"
                   if header is None else "the bearer token is wrong")
        await send_error(send, 401, "unauthorized", message, [(b"www-authenticate", b"Bearer")])


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        # Read the whole (capped) body now, then hand it on; after it, the real receive (a
        # streamed response learns of a client that went away from there).
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        limit = f"{self.max_bytes / (1 << 20):g} MiB" if self.max_bytes >= 1 << 20 else f"{self.max_bytes} bytes"
        await send_error(send, 413, "too_large", f"the request body is larger than {limit}")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


__all__ = ["MAX_BODY_BYTES", "PUBLIC_PATHS", "BearerAuth", "BodyLimit", "came_over_socket", "send_error",
           "token_matches"]
