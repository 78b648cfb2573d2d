"""``LitAPI.authorize``: a custom check run before the model route, as LitServe (and FastAPI) run it.

LitServe treats ``authorize`` as a FastAPI dependency: its parameters may be ``Depends(HTTPBearer())``,
``Header(...)``, ``Request`` and so on, and it rejects a request by raising ``HTTPException``. To give
exactly FastAPI's behaviour (FastAPI's own 401/403 for a missing ``Authorization`` header included),
the check runs through FastAPI itself: a one-route FastAPI app whose only dependency is
``authorize``, called with the request's scope and no body. A 2xx answer lets the request through;
anything else is sent to the client as FastAPI produced it (status, headers, body).

This costs one extra in-process ASGI call per request, and only for an API that defines
``authorize``; FastAPI is needed only then.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ConfigurationError

logger = logging.getLogger("litserve")

_CHECK_PATH = "/__litserve_authorize__"


def has_authorize(api: Any) -> bool:
    return callable(getattr(api, "authorize", None))


def build_authorizer(api: Any) -> ASGIApp:
    """The one-route FastAPI app that runs ``api.authorize`` as a dependency."""
    try:
        from fastapi import Depends, FastAPI
        from fastapi.responses import Response as FastAPIResponse
    except ImportError:
        raise ConfigurationError(
            f"{type(api).__name__}.authorize is a FastAPI dependency: install FastAPI (pip install fastapi)"
        ) from None
    checker = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def ok() -> FastAPIResponse:
        return FastAPIResponse(status_code=204)

    checker.add_api_route(_CHECK_PATH, ok, methods=["GET"], dependencies=[Depends(api.authorize)])
    return checker


class Authorized:
    """Wraps an ASGI endpoint: the request reaches ``inner`` only if ``authorize`` lets it through."""

    def __init__(self, inner: ASGIApp | None, api: Any) -> None:
        self.inner = inner  # None: used only for ``check`` (the MCP endpoint)
        self.checker = build_authorizer(api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.inner is not None
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        rejection = await self.check(scope)
        if rejection is None:
            await self.inner(scope, receive, send)
            return
        for message in rejection:
            await send(message)

    async def check(self, scope: Scope) -> list[Message] | None:
        """None if ``authorize`` accepted the request, else the messages of FastAPI's answer."""
        check_scope = {
            **scope,
            "method": "GET",
            "path": _CHECK_PATH,
            "raw_path": _CHECK_PATH.encode(),
            "root_path": "",
            "query_string": scope.get("query_string", b""),
        }
        sent: list[Message] = []

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def collect(message: Message) -> None:
            sent.append(message)

        try:
            await self.checker(check_scope, no_body, collect)
        except Exception:  # authorize raised something other than HTTPException: FastAPI sent 500 and re-raised
            logger.exception("authorize() raised")
        start = next((m for m in sent if m["type"] == "http.response.start"), None)
        if start is not None and 200 <= start["status"] < 300:
            return None
        if start is None:  # the checker answered nothing: refuse rather than let the request through
            return [
                {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]},
                {"type": "http.response.body", "body": b'{"detail":"authorization check failed"}'},
            ]
        return sent
