"""The model route: one raw ASGI callable from request bytes to response bytes.

Raw ASGI rather than Starlette's Request/Response because this is the hot path and because it must
see ``http.disconnect`` itself: after the body is read, one small task waits on ``receive()`` while
the handler waits on the call, and whichever finishes first decides. The timeout is one timer on the
loop. Every way out (reply, timeout, disconnect, error, cancellation) goes through ``finally``, which
drops or cancels the request and stops the timer and the watcher, so nothing outlives the request.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from ..errors import (
    ClientDisconnected,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    error_body,
)
from . import protocol as P
from .metrics import Metrics
from .pool import RUNNING, Call, Pool

logger = logging.getLogger("litserve")

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")
_JSON = (b"content-type", b"application/json")
_NDJSON = (b"content-type", b"application/x-ndjson")
_SSE = (b"content-type", b"text/event-stream")
_NO_CACHE = (b"cache-control", b"no-cache")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_RESERVED_HEADERS = frozenset(
    {"content-length", "content-type", "transfer-encoding", "connection", "x-request-id", "keep-alive"}
)
WATCH_DELAY = 0.01  # seconds before a unary call starts watching for its client's disconnect


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> bytes:
    """Unique across processes and restarts (random per-process prefix), without a syscall per call."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}".encode()


class PredictEndpoint:
    def __init__(
        self,
        pool: Pool,
        metrics: Metrics,
        *,
        timeout: float | None,
        max_payload_size: int,
        api_key: str | None,
        validate: Callable[[bytes], None] | None,
        stream: bool,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.timeout = timeout
        self.max_payload_size = max_payload_size
        self._api_key = api_key.encode() if api_key else None
        self.validate = validate
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        content_length = api_key = request_id = None
        sse = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = value
            elif name == b"x-api-key":
                api_key = value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"accept":
                sse = b"text/event-stream" in value
        if request_id is None or not _REQUEST_ID.match(request_id):
            request_id = new_request_id()
        pool = self.pool
        try:
            if self._api_key is not None and (api_key is None or not hmac.compare_digest(api_key, self._api_key)):
                raise Unauthorized("missing or invalid X-API-Key header")
            body = await self._read_body(receive, content_length)
            if body is None:
                self._answered(499, arrived, loop)
                return  # the client left while sending its body
            if self.validate is not None:
                self.validate(body)
            if pool.state != RUNNING:
                await self._start(pool)
            call = pool.submit(body, request_id)
        except RequestError as exc:
            await _send_error(send, exc, request_id)
            self._answered(exc.status, arrived, loop)
            return
        if self.stream:
            status = await self._stream(call, receive, send, request_id, arrived, sse)
        else:
            status = await self._unary(call, receive, send, request_id, arrived)
        self._answered(status, arrived, loop)

    async def _start(self, pool: Pool) -> None:
        try:
            await pool.ensure_started()
        except RequestError:
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"the model workers could not start: {exc}", retry_after=30) from None

    def _answered(self, status: int, arrived: float, loop: asyncio.AbstractEventLoop) -> None:
        self.metrics.answered(status, loop.time() - arrived)

    async def _read_body(self, receive: Receive, content_length: bytes | None) -> bytes | None:
        limit = self.max_payload_size
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                raise PayloadTooLarge("invalid Content-Length") from None
            if declared > limit:
                raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = message.get("body", b"")
        if len(body) > limit:  # a chunked body can arrive whole, or over the limit, in its first message
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        if not message.get("more_body", False):
            return body
        parts = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    # -- waiting --------------------------------------------------------------------------------------
    def _start_watch(self, receive: Receive, call: Call, holder: list[Any]) -> None:
        holder[0] = self._watch(receive, call)

    def _watch(self, receive: Receive, call: Call) -> asyncio.Task[None]:
        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.metrics.disconnects.inc()
                    self.pool.cancel(call, ClientDisconnected())
                    return

        return asyncio.get_running_loop().create_task(watch())

    def _expire(self, call: Call) -> None:
        self.metrics.timeouts.inc()
        self.pool.cancel(call, RequestTimeout(f"the request did not complete within {self.timeout}s"))

    async def _unary(self, call: Call, receive: Receive, send: Send, request_id: bytes, arrived: float) -> int:
        loop = asyncio.get_running_loop()
        timer = loop.call_at(arrived + self.timeout, self._expire, call) if self.timeout is not None else None
        # Most calls finish in well under WATCH_DELAY; watching for a disconnect costs a task, so it
        # starts only for calls still waiting by then. A client that left earlier is seen then.
        watch: list[Any] = [None]
        watch[0] = loop.call_later(WATCH_DELAY, self._start_watch, receive, call, watch)
        try:
            status, payload, tag = await call.future
        except RequestError as exc:
            if not isinstance(exc, ClientDisconnected):
                await _send_error(send, exc, request_id)
            return exc.status
        finally:
            if timer is not None:
                timer.cancel()
            watch[0].cancel()  # the timer, or the task it started
            if not call.finished:
                self.pool.cancel(call, ClientDisconnected())  # we are being cancelled ourselves
        headers = [_JSON, (b"content-length", str(len(payload)).encode()), (b"x-request-id", request_id)]
        if tag:
            headers.extend(user_headers(tag))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return status

    async def _stream(
        self, call: Call, receive: Receive, send: Send, request_id: bytes, arrived: float, sse: bool
    ) -> int:
        loop = asyncio.get_running_loop()
        timeout = self.timeout
        progress = [arrived]  # time of the last chunk; the timer re-arms itself until a gap exceeds timeout

        def check_gap() -> None:
            due = progress[0] + timeout  # type: ignore[operator]
            if loop.time() >= due:
                self._expire(call)
            else:
                holder[0] = loop.call_at(due, check_gap)

        holder: list[Any] = [loop.call_at(arrived + timeout, check_gap) if timeout is not None else None]
        watcher = self._watch(receive, call)
        started = False
        status = 200
        try:
            while True:
                try:
                    kind, status, payload, tag = await call.next_chunk()
                except RequestError as exc:
                    if isinstance(exc, ClientDisconnected):
                        return exc.status
                    if not started:
                        await _send_error(send, exc, request_id)
                    else:
                        await send(
                            {"type": "http.response.body", "body": _error_record(exc.body(), sse), "more_body": False}
                        )
                    return exc.status
                progress[0] = loop.time()
                if kind == P.CHUNK:
                    if not started:
                        await _start_stream(send, request_id, sse)
                        started = True
                    data = b"data: " + payload + b"\n\n" if sse else payload + b"\n"
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    continue
                # END: 200 closes the stream; another status is an error before or during it
                if status == 200:
                    if not started:
                        await _start_stream(send, request_id, sse)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                elif not started:
                    await _send_raw_error(send, status, payload, request_id, user_headers(tag))
                else:
                    await send({"type": "http.response.body", "body": _error_record(payload, sse), "more_body": False})
                return status
        finally:
            if holder[0] is not None:
                holder[0].cancel()
            watcher.cancel()
            if not call.finished:
                self.pool.cancel(call, ClientDisconnected())


def _error_record(body: bytes, sse: bool) -> bytes:
    return b"event: error\ndata: " + body + b"\n\n" if sse else body + b"\n"


async def _start_stream(send: Send, request_id: bytes, sse: bool) -> None:
    headers = [_SSE, _NO_CACHE] if sse else [_NDJSON]
    headers.append((b"x-request-id", request_id))
    await send({"type": "http.response.start", "status": 200, "headers": headers})


def user_headers(tag: bytes) -> list[tuple[bytes, bytes]]:
    """The headers an ``HTTPException`` raised in user code carried, minus any that are not safe.

    Framing headers stay ours (a worker must not be able to break the response), and names and
    values are checked so nothing can inject a header line.
    """
    if not tag:
        return []
    try:
        given = json.loads(tag)
    except ValueError:
        return []
    out = []
    for name, value in given.items() if isinstance(given, dict) else ():
        if (
            isinstance(name, str)
            and isinstance(value, str)
            and _HEADER_NAME.match(name)
            and name.lower() not in _RESERVED_HEADERS
            and not _BAD_VALUE.search(value)
        ):
            out.append((name.lower().encode("latin-1"), value.encode("latin-1", "replace")))
    return out


async def _send_error(send: Send, exc: RequestError, request_id: bytes) -> None:
    extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    await _send_raw_error(send, exc.status, exc.body(), request_id, extra)


async def _send_raw_error(
    send: Send, status: int, body: bytes, request_id: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    if not body:
        body = error_body("request failed")
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id)]
    headers.extend(extra or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
