"""LitServe's server-side hooks, wired around the app only when a server uses them.

- ``LitAPI.health()``: ``/health`` answers LitServe's plain ``ok`` (200) while every API's
  ``health()`` returns true, else ``not ready`` (503).
- ``LitAPI.authorize``: the model route runs it first (see ``litserve.auth``).
- ``callbacks=``: ``on_request`` / ``on_response`` around the model route, ``on_server_start`` /
  ``on_server_end`` around the workers' life.
- ``loggers=``: the thread that feeds ``LitAPI.log`` entries to them, and the apps they ``mount``.
- ``middlewares=``: added to the Starlette app in LitServe's order.

None of this touches the request path of a server that does not use it: each wrapper is added only
when its feature is configured, decided once when the app is built.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..api import LitAPI
from ..auth import Authorized, has_authorize
from ..callbacks import Callback, CallbackRunner, EventTypes
from ..loggers import LogDispatcher, Logger

logger = logging.getLogger("litserve")

__all__ = (
    "LogDispatcher",
    "ServerHooks",
    "apply_middlewares",
    "health_response",
    "overrides_health",
    "wrap_model_route",
)


def overrides_health(api: LitAPI) -> bool:
    return getattr(type(api), "health", LitAPI.health) is not LitAPI.health


async def health_response(apis: Sequence[LitAPI]) -> Response:
    """LitServe's ``/health`` body: ``ok`` if every API's ``health()`` is true, else 503 ``not ready``."""
    for api in apis:
        if overrides_health(api):
            try:
                healthy = api.health()
                if inspect.isawaitable(healthy):
                    healthy = await healthy
            except Exception:  # a health check that breaks says "not healthy", with the reason in the log
                logger.exception("%s.health() raised", type(api).__name__)
                healthy = False
            if not healthy:
                return PlainTextResponse("not ready", status_code=503)
    return PlainTextResponse("ok")


def wrap_model_route(
    endpoint: ASGIApp, api: LitAPI, callbacks: CallbackRunner | None, server: Callable[[], Any]
) -> ASGIApp:
    """``endpoint`` with ``authorize`` in front and the request/response callbacks around, if any."""
    if callbacks is not None and (
        callbacks.listens(EventTypes.ON_REQUEST) or callbacks.listens(EventTypes.ON_RESPONSE)
    ):
        endpoint = _RequestCallbacks(endpoint, callbacks, server)
    if has_authorize(api):
        endpoint = Authorized(endpoint, api)
    return endpoint


class _RequestCallbacks:
    """Calls ``on_request`` when a request reaches the route and ``on_response`` as its answer starts."""

    def __init__(self, inner: ASGIApp, callbacks: CallbackRunner, server: Callable[[], Any]) -> None:
        self.inner = inner
        self.callbacks = callbacks
        self.server = server
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        callbacks = self.callbacks
        self.active += 1
        server = self.server()
        callbacks.trigger_event(EventTypes.ON_REQUEST.value, active_requests=self.active, litserver=server)

        async def send_hooked(message: Message) -> None:
            if message["type"] == "http.response.start":
                callbacks.trigger_event(EventTypes.ON_RESPONSE.value, litserver=server)
            await send(message)

        try:
            await self.inner(scope, receive, send_hooked)
        finally:
            self.active -= 1


def apply_middlewares(app: Any, middlewares: Sequence[Any]) -> None:
    """Add ``middlewares`` to a Starlette app as LitServe does: in list order, each wrapping those before it."""
    from ..middlewares import normalize_middlewares

    for mw in normalize_middlewares(list(middlewares)):
        app.add_middleware(mw.cls, *mw.args, **mw.kwargs)


def logger_mounts(loggers: Sequence[Logger]) -> list[tuple[str, Any]]:
    """(path, app) for each logger that called ``mount``."""
    return [
        (logger._config["mount"]["path"], logger._config["mount"]["app"])
        for logger in loggers
        if "mount" in getattr(logger, "_config", {})
    ]


class ServerHooks:
    """The server-wide LitServe features of one app: callbacks, loggers, middlewares.

    Built once by ``create_app``; ``attach`` readies each API for its workers, ``wrap`` puts the
    model route behind ``authorize`` and the request callbacks, ``install`` adds middlewares and the
    loggers' mounts to the app, ``started``/``stopped`` bracket the workers' life.
    """

    def __init__(
        self,
        callbacks: Sequence[Any] | Any = (),
        loggers: Sequence[Logger] | Logger | None = (),
        middlewares: Sequence[Any] | None = (),
    ) -> None:
        from ..loggers import check_loggers
        from ..middlewares import normalize_middlewares

        items: list[Any] = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or ())
        self.callbacks = CallbackRunner(items)
        self.loggers = check_loggers(loggers)
        self.middlewares = normalize_middlewares(list(middlewares or ()))
        self.dispatcher = LogDispatcher(self.loggers) if self.loggers else None
        self.server: Any = None  # the LitServer, when one built the app; given to server-side callbacks

    def attach(self, api: LitAPI, pool: Any) -> None:
        """Before the workers spawn: the callbacks and the log switch travel with ``api``; LOG frames reach us."""
        from . import hooks

        hooks.attach(api, tuple(self.callbacks.callbacks), log=self.dispatcher is not None)
        if self.dispatcher is not None:
            pool.on_log = self.dispatcher.put

    def wrap(self, endpoint: ASGIApp, api: LitAPI, app: Callable[[], Any]) -> ASGIApp:
        return wrap_model_route(endpoint, api, self.callbacks, lambda: self.server or app())

    def install(self, app: Any) -> None:
        for mw in self.middlewares:
            app.add_middleware(mw.cls, *mw.args, **mw.kwargs)
        for path, mounted in logger_mounts(self.loggers):
            app.mount(path, mounted)

    def started(self, app: Any) -> None:
        self.callbacks.trigger_event(EventTypes.ON_SERVER_START.value, litserver=self.server or app)

    def stopped(self, app: Any) -> None:
        self.callbacks.trigger_event(EventTypes.ON_SERVER_END.value, litserver=self.server or app)
        if self.dispatcher is not None:
            self.dispatcher.stop()
