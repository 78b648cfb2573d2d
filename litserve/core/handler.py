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
from typing import Protocol

from starlette.types import Receive, Scope, Send

from ..config import Settings
from ..errors import (
    BadRequest,
    ClientDisconnected,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
    error_body,
    startup_failed,
)
from . import protocol as P
from .forms import is_form
from .http_limits import ABORT_KEY
from .http_limits import SCOPE_FLAG as BODY_TIMED_OUT
from .metrics import Metrics
from .pool import RUNNING, Call, Pool
from .responses import RAW_RESPONSE_TAG

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


def key_accepted(key: bytes | None, given: bytes | None) -> bool:
    """The one API-key check (model route and /info): no key set, or ``given`` matches it in constant time."""
    return key is None or (given is not None and hmac.compare_digest(given, key))


class PredictEndpoint:
    """``POST api_path``: auth, body limit, validation, queueing; then a ``RequestGuard`` sees it through."""

    def __init__(
        self,
        pool: Pool,
        metrics: Metrics,
        settings: Settings,
        *,
        validate: Callable[[bytes], None] | None,
        stream: bool,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.timeout = settings.timeout
        self.max_payload_size = settings.max_payload_size
        self._api_key = settings.api_key.encode() if settings.api_key else None
        self.validate = validate
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        content_length = api_key = request_id = content_type = None
        sse = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
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
            if not key_accepted(self._api_key, api_key):
                raise Unauthorized("missing or invalid X-API-Key header")
            body = await read_body(receive, content_length, self.max_payload_size)
            if body is None:  # the client left while sending its body, or missed the body deadline
                self.metrics.answered(unread_status(scope), loop.time() - arrived)
                return
            tag = request_id
            if content_type is not None and not content_type.startswith(b"application/json") and is_form(content_type):
                if self.validate is not None:
                    raise UnsupportedMediaType(
                        "this API takes a JSON body (its decode_request is annotated with a model): send it "
                        "with Content-Type: application/json (curl -d alone sends a form)"
                    )
                tag = request_id + b"\n" + content_type  # the worker parses the form (core/forms.py)
                if len(tag) > P.MAX_TAG_BYTES:
                    raise BadRequest("the Content-Type header is too long")
            elif self.validate is not None:
                self.validate(body)
            if pool.state != RUNNING:
                await self._start(pool)
            call = pool.submit(body, tag)
        except RequestError as exc:
            await _send_error(send, exc, request_id)
            self.metrics.answered(exc.status, loop.time() - arrived)
            return
        with RequestGuard(self, call, receive, arrived, loop, scope.get(ABORT_KEY)) as guard:
            if self.stream:
                status = await _send_stream(guard, send, request_id, sse)
            else:
                status = await _send_reply(guard, send, request_id)
        self.metrics.answered(status, loop.time() - arrived)

    async def _start(self, pool: Pool) -> None:
        try:
            await pool.ensure_started()
        except RequestError:
            raise
        except Exception as exc:
            raise startup_failed(exc) from None


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes | None:
    """A request's body, at most ``limit`` bytes (PayloadTooLarge, from the declared length or as it
    streams in), or None when the client left while sending it or missed the body deadline
    (``unread_status`` says which). Every route that reads a body reads it here."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise BadRequest("invalid Content-Length") from None
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


def unread_status(scope: Scope) -> int:
    """The status of a request whose body never came: 408 when it missed the body deadline (the
    answer was written by core/http_limits.py), else 499 (the client left)."""
    return 408 if scope.get(BODY_TIMED_OUT) else 499


class GuardOwner(Protocol):
    """What a ``RequestGuard`` needs from the route that made the call."""

    pool: Pool
    metrics: Metrics
    timeout: float | None


class RequestGuard:
    """One queued request's life: its deadline, the watch for its client leaving, and its cancellation.

    ``with RequestGuard(...) as guard:`` then either ``await guard.reply()`` (unary) or
    ``async for item in guard`` (a stream's items, the last one END). The deadline timer and the
    disconnect watch each cancel the call with the error the client should see; leaving the ``with``
    block by any path stops both and, if the call is still pending (we were cancelled ourselves),
    cancels it, so no worker time is spent on it after.

    The deadline is one timer: for a unary call at ``arrived + timeout``, armed only if the call is
    still waiting after ``WATCH_DELAY`` (most are answered sooner, and then cost no timer of their own
    beyond that one); for a stream it measures the gap since the last item and re-arms itself until a
    gap exceeds ``timeout``. A stream whose gap passed while its consumer still held the last item
    (blocked sending it: the client stopped reading) also has its connection closed with ``abort``,
    else the connection and the chunks buffered for it would stay for as long as the client chose.
    """

    __slots__ = ("_endpoint", "call", "_receive", "_loop", "_last", "_timer", "_watch", "_done", "_abort", "_out")

    def __init__(
        self,
        endpoint: GuardOwner,
        call: Call,
        receive: Receive,
        arrived: float,
        loop: asyncio.AbstractEventLoop,
        abort: Callable[[], None] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self.call = call
        self._receive = receive
        self._loop = loop
        self._last = arrived  # when the call last made progress (arrival, then each stream item)
        self._timer: asyncio.TimerHandle | None = None
        self._watch: asyncio.TimerHandle | asyncio.Task[None] | None = None
        self._done = False
        self._abort = abort  # closes the client's connection at once (core/http_limits.py); None: cannot
        self._out = False  # the consumer holds a stream item it has not come back from (sending it)

    def __enter__(self) -> RequestGuard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watch is not None:
            self._watch.cancel()  # the delayed start, or the watching task
        pool = self._endpoint.pool
        if self.call.rid in pool.calls:  # still pending: we are being cancelled ourselves
            pool.cancel(self.call, ClientDisconnected())

    async def reply(self) -> tuple[int, bytes, bytes]:
        """(status, payload, tag) of a unary call; raises the RequestError that ended it otherwise."""
        # Most calls finish in well under WATCH_DELAY; watching for a disconnect costs a task, and a
        # deadline timer costs a timer, so a call still waiting by then gets both (its deadline still
        # counts from its arrival). A client that left earlier is seen then.
        timeout = self._endpoint.timeout
        if timeout is not None and timeout <= WATCH_DELAY:
            self.arm_deadline()
        self._watch = self._loop.call_later(WATCH_DELAY, self._on_slow)
        return await self.call.future

    def __aiter__(self) -> RequestGuard:
        watch = self._watch
        if watch is not None:  # a unary call whose head came (a streamed Response): its gaps count from now
            self._last = self._loop.time()
            self.arm_deadline()
            if isinstance(watch, asyncio.Task):
                return self
            watch.cancel()  # the delayed start of the watch
        self.arm_deadline()
        self._watch = self._loop.create_task(self._watch_disconnect())
        return self

    def arm_deadline(self) -> None:
        """Start the deadline timer (once): ``timeout`` after the last progress."""
        timeout = self._endpoint.timeout
        if self._timer is None and timeout is not None:
            self._timer = self._loop.call_at(self._last + timeout, self._on_deadline)

    async def __anext__(self) -> tuple[int, int, bytes, bytes]:
        """The next (kind, status, payload, tag) of a stream; END is the last one."""
        if self._done:
            raise StopAsyncIteration
        self._out = False
        call = self.call
        item = await call.next_chunk()
        self._last = self._loop.time()
        self._done = item[0] != P.CHUNK
        if call.paused:  # its client is catching up: the worker may go on at half the stream buffer
            self._endpoint.pool.drained(call)
        self._out = True
        return item

    def _on_deadline(self) -> None:
        due = self._last + self._endpoint.timeout  # type: ignore[operator]
        if self._loop.time() < due:  # a stream that made progress: measure the gap from its last item
            self._timer = self._loop.call_at(due, self._on_deadline)
            return
        endpoint = self._endpoint
        endpoint.metrics.timeouts.inc()
        endpoint.pool.cancel(self.call, RequestTimeout(f"the request did not complete within {endpoint.timeout}s"))
        if self._out and self._abort is not None:  # stuck sending: the client took nothing for ``timeout``
            if isinstance(self._watch, asyncio.Task):
                self._watch.cancel()  # its connection ends because we close it, not because the client left
            self._abort()

    def _on_slow(self) -> None:
        self._watch = self._loop.create_task(self._watch_disconnect())
        self.arm_deadline()

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._endpoint.metrics.disconnects.inc()
                self._endpoint.pool.cancel(self.call, ClientDisconnected())
                return


class CallGuard(RequestGuard):
    """A ``RequestGuard`` for a route that watches for its client leaving itself (an OpenAI request's
    ``n`` calls share one watch) or has no client to watch (an MCP tool call): the call's deadline
    (the whole call when unary, the gap between chunks when streaming) and its cancellation on the
    way out, nothing more."""

    __slots__ = ()

    async def reply(self) -> tuple[int, bytes, bytes]:
        self.arm_deadline()
        return await self.call.future

    def __aiter__(self) -> CallGuard:
        self.arm_deadline()
        return self


async def _send_reply(guard: RequestGuard, send: Send, request_id: bytes) -> int:
    try:
        status, payload, tag = await guard.reply()
    except RequestError as exc:
        if not isinstance(exc, ClientDisconnected):
            await _send_error(send, exc, request_id)
        return exc.status
    if tag[:1] == RAW_RESPONSE_TAG:  # a Response from encode_response: its own headers
        headers = raw_response_headers(tag)
        if guard.call.streamed:  # a StreamingResponse or FileResponse: this was its head, the body follows
            return await _send_response_body(guard, send, request_id, status, headers)
        headers += [(b"content-length", str(len(payload)).encode()), (b"x-request-id", request_id)]
    else:
        headers = [_JSON, (b"content-length", str(len(payload)).encode()), (b"x-request-id", request_id)]
        if tag:
            headers.extend(user_headers(tag))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
    return status


async def _send_stream(guard: RequestGuard, send: Send, request_id: bytes, sse: bool) -> int:
    """Chunks as NDJSON lines or server-sent events; an error before the first chunk is a plain error response."""
    started = False
    status = 200
    try:
        async for kind, status, payload, tag in guard:
            if kind == P.CHUNK:
                if not started:
                    await _start_stream(send, request_id, sse)
                    started = True
                data = b"data: " + payload + b"\n\n" if sse else payload + b"\n"
                await send({"type": "http.response.body", "body": data, "more_body": True})
            elif status == 200:  # END: 200 closes the stream; another status is an error before or during it
                if not started:
                    await _start_stream(send, request_id, sse)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif not started:
                await send_raw_error(send, status, payload, request_id, user_headers(tag))
            else:
                await send({"type": "http.response.body", "body": _error_record(payload, sse), "more_body": False})
    except RequestError as exc:
        if isinstance(exc, ClientDisconnected):
            return exc.status
        if not started:
            await _send_error(send, exc, request_id)
        else:
            await send({"type": "http.response.body", "body": _error_record(exc.body(), sse), "more_body": False})
        return exc.status
    return status


async def _send_response_body(
    guard: RequestGuard, send: Send, request_id: bytes, status: int, headers: list[tuple[bytes, bytes]]
) -> int:
    """The body of a streamed Response, chunk by chunk as the worker sends it (no Content-Length:
    chunked). An error after the head ends the body with an error record, as a ``stream=True`` error does."""
    headers.append((b"x-request-id", request_id))
    sse = any(name == b"content-type" and value.startswith(b"text/event-stream") for name, value in headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    try:
        async for kind, code, payload, _ in guard:
            if kind == P.CHUNK:
                await send({"type": "http.response.body", "body": payload, "more_body": True})
            elif code == 200:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await send({"type": "http.response.body", "body": _error_record(payload, sse), "more_body": False})
                return code
    except RequestError as exc:
        if not isinstance(exc, ClientDisconnected):
            await send({"type": "http.response.body", "body": _error_record(exc.body(), sse), "more_body": False})
        return exc.status
    return status


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


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"x-request-id"})


def raw_response_headers(tag: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of a ``Response`` built in the worker (``R`` + JSON pairs), minus framing ones.

    Content-Type and the rest are the user's; the length and the request id stay ours, and names
    and values are checked so nothing can inject a header line.
    """
    try:
        pairs = json.loads(tag[1:])
    except ValueError:
        return []
    out = []
    for pair in pairs if isinstance(pairs, list) else ():
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair):
            name, value = pair
            raw = name.lower().encode("latin-1", "replace")
            if _HEADER_NAME.match(name) and raw not in _FRAMING and not _BAD_VALUE.search(value):
                out.append((raw, value.encode("latin-1", "replace")))
    return out


async def _send_error(send: Send, exc: RequestError, request_id: bytes) -> None:
    extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    await send_raw_error(send, exc.status, exc.body(), request_id, extra)


async def send_raw_error(
    send: Send, status: int, body: bytes, request_id: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    if not body:
        body = error_body("request failed")
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id)]
    headers.extend(extra or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
