"""Read deadlines and a bound on open connections, enforced in uvicorn's HTTP protocol classes.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but nothing else: a client that
sends half a request line, or headers and then a body that never ends, holds its connection (and
a file descriptor, and for a body a request slot) forever, and enough of them exhaust the server's
descriptors so that ``accept`` fails for everyone. The ASGI app cannot help: it is not called until
the headers are complete. So the limits live where the bytes arrive, in subclasses of uvicorn's two
protocol classes (httptools and h11) that add, per connection:

- **header deadline** (``header_timeout``): from the connection's start, or from the first byte of a
  kept-alive connection's next request, the headers must be complete in time, else ``408`` and close.
- **body deadline** (``body_timeout``, by default the request's ``timeout``): a body still arriving
  when it passes gets ``408`` (when no response has started) and the connection closes; the app's
  ``receive()`` then reports a disconnect, so the request's slot is freed.
- **idle keep-alive** (``keep_alive_timeout``): uvicorn's own timer, with our setting when one is given.
- **a connection bound** (``max_connections``, by default below the open-file limit, whose soft
  value is raised to the hard one): at the bound the oldest idle connection (between requests, or
  still sending headers) is closed to make room; if none is idle the new one gets ``503`` + close.
  Connections with a request in progress are never shed, so honest traffic keeps being served.

Cost on the hot path: none per request in the common case (headers and body in one read): a timer
is armed only while headers or a body are incomplete, once per connection rather than per request,
plus two dict operations per request for the idle order.

How the classes get used: ``install()``, called from the app's lifespan, swaps them into the
running uvicorn server's config (uvicorn builds each connection's protocol from
``config.http_protocol_class`` when the connection arrives, after the lifespan has started), so
``LitServer.run``, ``litserve serve``, ``uvicorn module:app`` and gunicorn's ``UvicornWorker`` are
all covered without a flag. A host app that mounts a litserve app gets no lifespan from it: pass
``--http litserve.core.http_limits:auto`` to uvicorn (defaults, no metrics) or start the model app
in the host's lifespan with ``async with model_app.running()``, which installs them too.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol as _H11

from ..errors import error_body

try:  # uvicorn[standard] brings httptools; without it (some platforms) h11 is uvicorn's only parser
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpTools
except ImportError:  # pragma: no cover
    _HttpTools = _H11  # type: ignore[misc, assignment]

try:
    import resource
except ImportError:  # pragma: no cover - Windows: no RLIMIT_NOFILE to raise
    resource = None  # type: ignore[assignment]

logger = logging.getLogger("litserve")

SCOPE_FLAG = "litserve.body_timed_out"  # set in a request's scope when its body missed the deadline
# In a request's scope: closes its connection at once, dropping what is buffered for it (a stream's
# client that stopped reading; core/handler.py). Absent where these protocol classes are not installed.
ABORT_KEY = "litserve.abort"

_IDLE, _HEADERS, _BODY, _BUSY = 0, 1, 2, 3  # where a connection is; a timer runs only in _HEADERS/_BODY


@dataclass(frozen=True)
class Limits:
    """The per-connection limits (see docs/settings.md); ``None`` turns a deadline off."""

    header_timeout: float | None = 5.0
    body_timeout: float | None = 30.0
    keep_alive_timeout: float | None = None  # None: uvicorn's own timeout_keep_alive
    max_connections: int | None = None


class Board:
    """One server's connections: how many are open, and the idle ones, oldest first."""

    def __init__(self, limits: Limits, metrics: Any) -> None:
        soft = raise_open_file_limit()
        self.cap = limits.max_connections or default_max_connections(soft)
        self.open: set[Any] = set()
        self.idle: dict[Any, None] = {}  # insertion order = the order they became idle
        self.metrics = metrics

    def admit(self, conn: Any) -> bool:
        """Count ``conn`` in; at the cap shed the oldest idle connection, or refuse (False)."""
        if len(self.open) >= self.cap:
            if not self.idle:
                self.count("refused")
                return False
            oldest = next(iter(self.idle))
            self.drop(oldest)
            oldest.transport.close()
            self.count("shed")
        self.open.add(conn)
        if self.metrics is not None:
            self.metrics.connections_open.inc()
        return True

    def drop(self, conn: Any) -> None:
        if conn in self.open:
            self.open.discard(conn)
            if self.metrics is not None:
                self.metrics.connections_open.dec()
        self.idle.pop(conn, None)

    def count(self, event: str) -> None:
        if self.metrics is not None:
            self.metrics.connection_event(event)


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (where the OS allows); return the soft limit."""
    if resource is None:
        return 8192  # Windows: sockets are not bounded by a file-descriptor limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        for value in (target, 10240):  # macOS refuses more than OPEN_MAX (10240) for an unlimited hard limit
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
                return value
            except (ValueError, OSError):
                continue
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_max_connections(soft_limit: int) -> int:
    """Connections allowed under ``soft_limit`` descriptors, leaving room for the server's own
    (listening socket, ZeroMQ, worker pipes, logs): an eighth of the limit, at least 64."""
    return max(16, soft_limit - max(64, soft_limit // 8))


def _response(status: bytes, message: str, extra: bytes = b"") -> bytes:
    body = error_body(message)
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n" + extra
        + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


_408_HEADERS = _response(b"408 Request Timeout", "the request headers did not arrive within the time allowed")
_408_BODY = _response(b"408 Request Timeout", "the request body did not arrive within the time allowed")
_503_FULL = _response(b"503 Service Unavailable", "too many open connections", b"retry-after: 1\r\n")


class _Guard:
    """The limits, mixed in before uvicorn's protocol class (``_lit_limits``/``_lit_metrics`` set per class)."""

    _lit_limits: Limits = Limits()
    _lit_metrics: Any = None

    # uvicorn's attributes this mixin relies on (present on both HttpToolsProtocol and H11Protocol)
    transport: asyncio.Transport
    cycle: Any
    loop: asyncio.AbstractEventLoop
    server_state: Any
    timeout_keep_alive: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._lit_limits.keep_alive_timeout is not None:
            self.timeout_keep_alive = self._lit_limits.keep_alive_timeout
        board = getattr(self.server_state, "_litserve_board", None)
        if board is None:
            board = self.server_state._litserve_board = Board(self._lit_limits, self._lit_metrics)
        self._lit_board: Board = board
        self._lit_state = _IDLE
        self._lit_timer: asyncio.TimerHandle | None = None
        self._lit_body_cycle: Any = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if not self._lit_board.admit(self):
            self.transport.write(_503_FULL)
            self.transport.close()
            return
        self._lit_idle()
        self._lit_wait_headers()  # a new connection owes its first request's headers in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._lit_cancel()
        self._lit_board.drop(self)
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)  # type: ignore[misc]
        cycle = self.cycle
        if cycle is not before:  # a request's headers are complete
            self._lit_request(cycle)
        elif self._lit_state == _IDLE and (cycle is None or cycle.response_complete):
            if not self.transport.is_closing():
                self._lit_wait_headers()  # the next request has begun; its headers must finish in time
        elif self._lit_state == _BODY and not self._lit_body_cycle.more_body:
            self._lit_cancel()  # the body is complete
            if cycle.response_complete:  # answered before its body was in (401, 413): wait for the next
                self._lit_idle()
                self._lit_wait_headers()
            else:
                self._lit_state = _BUSY

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self._lit_state == _BUSY and (self.cycle is None or self.cycle.response_complete):
            self._lit_state = _IDLE
            if not self.transport.is_closing():
                self._lit_idle()  # uvicorn's keep-alive timer now runs; our header timer waits for bytes

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self._lit_board.count("idle_timeout")
        super().timeout_keep_alive_handler()  # type: ignore[misc]

    # -- the deadlines ------------------------------------------------------------------------------
    def _lit_idle(self) -> None:
        self._lit_board.idle[self] = None  # at the end: idle since now (a request start took it out)

    def _lit_wait_headers(self) -> None:
        timeout = self._lit_limits.header_timeout
        self._lit_state = _HEADERS
        if timeout is not None:
            self._lit_cancel()
            self._lit_timer = self.loop.call_later(timeout, self._lit_expired)

    def _lit_request(self, cycle: Any) -> None:
        cycle.scope[ABORT_KEY] = self._lit_abort
        self._lit_cancel()
        self._lit_board.idle.pop(self, None)
        timeout = self._lit_limits.body_timeout
        if cycle.more_body and timeout is not None:
            self._lit_state = _BODY
            self._lit_body_cycle = cycle
            self._lit_timer = self.loop.call_later(timeout, self._lit_expired)
        else:
            self._lit_state = _BUSY

    def _lit_cancel(self) -> None:
        if self._lit_timer is not None:
            self._lit_timer.cancel()
            self._lit_timer = None

    def _lit_abort(self) -> None:
        """Close now, without flushing: the client stopped reading its response, and what is buffered
        for it would otherwise wait (with the connection) for as long as it chooses not to read."""
        if self not in self._lit_board.open:
            return  # gone already
        self._lit_board.count("write_timeout")
        self.transport.abort()

    def _lit_expired(self) -> None:
        self._lit_timer = None
        if self.transport.is_closing():
            return
        if self._lit_state == _HEADERS:
            self._lit_board.count("header_timeout")
            self.transport.write(_408_HEADERS)
        elif self._lit_state == _BODY:
            cycle, self._lit_body_cycle = self._lit_body_cycle, None
            self._lit_board.count("body_timeout")
            if not cycle.response_started:
                self.transport.write(_408_BODY)
            cycle.scope[SCOPE_FLAG] = True  # the handler counts a 408, not a client that left
            cycle.disconnected = True  # the app's receive() now returns http.disconnect: its slot frees
            cycle.message_event.set()
        else:
            return
        self._lit_state = _IDLE
        self.transport.close()


def guarded(base: type[asyncio.Protocol], limits: Limits, metrics: Any = None) -> type[asyncio.Protocol] | None:
    """``base`` (uvicorn's httptools or h11 protocol, or a subclass) with the limits; None for another kind."""
    if issubclass(base, _Guard):
        bases: tuple[type, ...] = (base,)
    elif issubclass(base, (_HttpTools, _H11)):
        bases = (_Guard, base)
    else:
        return None
    name = base.__name__ if issubclass(base, _Guard) else f"Limited{base.__name__}"
    return type(name, bases, {"_lit_limits": limits, "_lit_metrics": metrics, "__module__": __name__})


def install(limits: Limits, metrics: Any = None) -> bool:
    """From inside an app's lifespan startup under uvicorn: make the running server use the limits.

    Returns False (and logs why) when the app is not run by uvicorn's lifespan, or its protocol is
    one we do not know; requests are then served as before, without these limits.
    """
    raise_open_file_limit()
    config = _running_uvicorn_config()
    if config is None:
        logger.debug("not under uvicorn's lifespan: read deadlines and the connection bound are not installed")
        return False
    current = getattr(config, "http_protocol_class", None)
    if current is None:
        return False
    if issubclass(current, _Guard) and current._lit_metrics is not None:
        return True  # another litserve app in this server installed them first
    protocol = guarded(current, limits, metrics)
    if protocol is None:
        logger.warning(
            "HTTP protocol %s is not uvicorn's httptools or h11: read deadlines and the connection bound "
            "are not enforced (see docs/security.md)",
            getattr(current, "__name__", current),
        )
        return False
    config.http_protocol_class = protocol
    return True


def _running_uvicorn_config() -> Any:
    """The ``uvicorn.Config`` of the lifespan that is calling us, found on the call stack."""
    lifespan_on = sys.modules.get("uvicorn.lifespan.on")
    if lifespan_on is None:
        return None
    frame: FrameType | None = sys._getframe(1)
    for _ in range(100):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, lifespan_on.LifespanOn):
            return owner.config
        frame = frame.f_back
    return None


HttpToolsProtocol = guarded(_HttpTools, Limits())
H11Protocol = guarded(_H11, Limits())
auto = HttpToolsProtocol  # ``--http litserve.core.http_limits:auto`` (httptools ships with uvicorn[standard])
