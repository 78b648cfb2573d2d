"""``middlewares=``: ASGI middlewares around the whole app, given as LitServe takes them.

Each item is a middleware class (``cls(app)``), or a ``(cls, kwargs)`` tuple (``cls(app, **kwargs)``);
the first item is the outermost. Any Starlette/FastAPI ``BaseHTTPMiddleware`` subclass or pure ASGI
middleware works. They run in the server process, on every request, so they cost what they do:
leave them out for the fastest path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ConfigurationError


def normalize_middlewares(middlewares: Sequence[Any] | None) -> list[Middleware]:
    """Starlette ``Middleware`` entries for ``middlewares``, or ConfigurationError saying what is wrong."""
    if middlewares is None:
        return []
    if not isinstance(middlewares, (list, tuple)):
        raise ConfigurationError(
            "middlewares must be a list of middleware classes or (class, kwargs) tuples, e.g. "
            "middlewares=[GZipMiddleware, (CORSMiddleware, {'allow_origins': ['*']})]"
        )
    out = []
    for item in middlewares:
        if isinstance(item, Middleware):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and callable(item[0]) and isinstance(item[1], dict):
            out.append(Middleware(item[0], **item[1]))
        elif callable(item) and not isinstance(item, tuple):
            out.append(Middleware(item))
        else:
            raise ConfigurationError(f"a middleware must be a class or a (class, kwargs) tuple, got {item!r}")
    return out


class MaxSizeMiddleware:
    """Refuse request bodies over ``max_size`` bytes with 413, as they stream in (LitServe's middleware).

    litserve's own ``max_payload_size`` setting already does this for the model route; this class is
    here so server files that add it by name keep working, and it applies to every route.
    """

    def __init__(self, app: ASGIApp, *, max_size: int | None = None) -> None:
        self.app = app
        self.max_size = max_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_size
        if scope["type"] != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send)
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _too_large(send)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = b'{"detail":"Payload too large"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
