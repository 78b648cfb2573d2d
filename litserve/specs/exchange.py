"""One HTTP request on a spec's route, from its bytes to the calls it runs on the pool.

A spec route may run several calls for one request (``n`` choices are ``n`` worker streams), so the
life of the request is owned here, not per call: one watch for the client's disconnect, which
cancels every call at once (the worker stops generating at its next chunk); one deadline per call
(the model route's ``RequestGuard``: the whole call when unary, the gap between chunks when
streaming); and one ``close`` that cancels whatever is still running, whichever way the handler
leaves. The body is read by the model route's reader, so the limits and their answers (413, 400,
408) are the same, in OpenAI's error object.

Authentication accepts OpenAI's ``Authorization: Bearer <key>`` as well as litserve's ``X-API-Key``,
so ``openai.OpenAI(api_key=...)`` works against a server started with ``LIT_SERVER_API_KEY``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..core import protocol as P
from ..core.handler import CallGuard, key_accepted, new_request_id, read_body, unread_status
from ..core.http_limits import ABORT_KEY
from ..core.metrics import Metrics
from ..core.pool import RUNNING, Call, Pool
from ..errors import ClientDisconnected, RequestError, startup_failed
from . import errors as E

_JSON = (b"content-type", b"application/json")


class OpenAIError(Exception):
    """An error answered with OpenAI's error object."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None, headers: Any = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = E.error_json(status, message, param=param, code=code)
        self.headers = list(headers)

    @classmethod
    def from_request_error(cls, exc: RequestError) -> OpenAIError:
        err = cls(exc.status, "")
        err.body = E.from_litserve_body(exc.status, exc.body())
        err.headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
        return err

    @classmethod
    def from_reply(cls, status: int, payload: bytes) -> OpenAIError:
        """An error reply from a worker (user code raised), re-shaped as OpenAI's object."""
        err = cls(status, "")
        err.body = E.from_litserve_body(status, payload)
        return err


@dataclass
class SpecContext:
    """What a spec's routes need from the app: the pool of its API and the server's settings."""

    pool: Pool
    metrics: Metrics
    timeout: float | None
    max_payload_size: int
    api_key: str | None


class Exchange:
    """The request being handled: read it, run calls for it, answer it, clean up after it."""

    def __init__(self, ctx: SpecContext, scope: Scope, receive: Receive, send: Send) -> None:
        self.ctx = ctx
        self.scope = scope
        self.receive = receive
        self.send = send
        self.loop = asyncio.get_running_loop()
        self.arrived = self.loop.time()
        self.calls: list[Call] = []
        self.disconnected = False
        self.started = False  # response headers sent
        self.status = 200
        self._watch: asyncio.Task[None] | None = None
        headers = {}
        for name, value in scope["headers"]:
            headers[name] = value
        self.headers: dict[bytes, bytes] = headers
        rid = headers.get(b"x-request-id")
        self.request_id = rid if rid and len(rid) <= 128 and rid.isascii() and rid.strip() == rid else new_request_id()

    # -- reading ----------------------------------------------------------------------------------------
    def authorise(self) -> None:
        key = self.ctx.api_key
        if not key:
            return
        given = self.headers.get(b"x-api-key")
        if given is None:
            auth = self.headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
        if not key_accepted(key.encode(), given):
            raise OpenAIError(401, "Incorrect or missing API key", code="invalid_api_key")

    async def body(self) -> bytes | None:
        """The request body, read as the model route reads it (same limit, 413, 400 and 408), or None
        when it never came: the client left, or it missed the body deadline (the 408 is written)."""
        try:
            body = await read_body(self.receive, self.headers.get(b"content-length"), self.ctx.max_payload_size)
        except RequestError as exc:
            raise OpenAIError.from_request_error(exc) from None
        if body is None:
            self.status = unread_status(self.scope)
            self.disconnected = self.status == 499
        return body

    # -- running ----------------------------------------------------------------------------------------
    async def submit(self, bodies: list[bytes]) -> list[Call]:
        """Queue one call per body (all or none), and start watching for the client leaving."""
        pool = self.ctx.pool
        try:
            if pool.state != RUNNING:
                try:
                    await pool.ensure_started()
                except RequestError:
                    raise
                except Exception as exc:
                    raise startup_failed(exc) from None
            for body in bodies:
                self.calls.append(pool.submit(body, self.request_id))
        except RequestError as exc:
            self.close()
            raise OpenAIError.from_request_error(exc) from None
        self._watch = self.loop.create_task(self._watch_disconnect())
        return self.calls

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.ctx.metrics.disconnects.inc()
                for call in self.calls:
                    self.ctx.pool.cancel(call, ClientDisconnected())
                return

    async def result(self, call: Call) -> tuple[int, bytes]:
        """(status, payload) of a unary call; raises RequestError on timeout or disconnect."""
        with CallGuard(self.ctx, call, self.receive, self.arrived, self.loop) as guard:
            status, payload, _tag = await guard.reply()
        return status, payload

    async def chunks(self, call: Call) -> AsyncIterator[bytes]:
        """A stream call's chunks; raises RequestError (or OpenAIError for an error reply) when it fails.

        The gap between chunks is bounded by ``timeout``, as on the model route (``RequestGuard``).
        """
        abort = self._cut_off if ABORT_KEY in self.scope else None
        with CallGuard(self.ctx, call, self.receive, self.loop.time(), self.loop, abort) as guard:
            async for kind, status, payload, _tag in guard:
                if kind == P.CHUNK:
                    yield payload
                elif status != 200:
                    raise OpenAIError.from_reply(status, payload)

    def _cut_off(self) -> None:
        """A stream's client took nothing for ``timeout`` (its call timed out while a chunk waited for
        it): close the connection now (core/http_limits.py), as the model route does. Not a disconnect."""
        if self._watch is not None:
            self._watch.cancel()
        self.scope[ABORT_KEY]()

    def close(self) -> None:
        """Cancel every call still running and stop the watch: whatever way the handler left."""
        if self._watch is not None:
            self._watch.cancel()
        for call in self.calls:
            if call.rid in self.ctx.pool.calls:
                self.ctx.pool.cancel(call, ClientDisconnected())

    # -- answering --------------------------------------------------------------------------------------
    async def reply(self, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", self.request_id)]
        headers.extend(extra or ())
        self.status = status
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def fail(self, exc: OpenAIError) -> None:
        await self.reply(exc.status, exc.body, exc.headers)

    async def start_stream(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self.send(
            {"type": "http.response.start", "status": 200, "headers": [*headers, (b"x-request-id", self.request_id)]}
        )

    async def write(self, data: bytes, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    def answered(self) -> None:
        self.ctx.metrics.answered(499 if self.disconnected else self.status, self.loop.time() - self.arrived)


def openai_routes(
    path: str, handle: Callable[[Exchange], Awaitable[None]], ctx: SpecContext, served_model: Callable[[], str]
) -> list[BaseRoute]:
    """The routes every OpenAI-style spec serves: its ``POST`` (raw ASGI), a CORS preflight, ``GET /v1/models``."""
    from .base import ASGIRoute
    from .chat_models import ModelList

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await handle(Exchange(ctx, scope, receive, send))

    async def models(request: Request) -> Response:
        body = ModelList(data=[{"id": served_model()}]).model_dump_json()  # type: ignore[list-item]
        return Response(body, media_type="application/json")

    async def preflight(request: Request) -> Response:
        return Response(status_code=200)

    return [
        Route(path, ASGIRoute(endpoint), methods=["POST"]),
        Route(path, preflight, methods=["OPTIONS"]),
        Route("/v1/models", models, methods=["GET"]),
    ]


M = TypeVar("M", bound=BaseModel)


def parse_request(model: type[M], body: bytes, served: str | None) -> M:
    """The body validated into ``model`` (400 naming the field), and 404 for a model this server does not serve."""
    try:
        request = model.model_validate_json(body)
    except ValidationError as exc:
        message, param = E.from_validation(exc)
        raise OpenAIError(400, message, param=param) from None
    asked = getattr(request, "model", None)
    if served and asked and asked != served:
        raise OpenAIError(
            404,
            f"The model '{asked}' does not exist; this server serves '{served}'",
            param="model",
            code="model_not_found",
        )
    return request
