"""``create_app``: a Starlette app serving a ``LitAPI`` through a pool of worker processes.

The workers start in the app's lifespan. Starlette sends no lifespan events to an app mounted inside
another, so the first request starts them too, and ``LitApp.start()``/``stop()`` (or
``async with app.running()``) let a host app start them eagerly in its own lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from typing_extensions import Unpack

from .. import checks
from ..api import LitAPI
from ..config import Settings, SettingsArgs
from ..devices import resolve_devices
from ..errors import ConfigurationError, RequestError, Unauthorized
from ..mcp import ToolTarget, mcp_routes
from ..specs.exchange import SpecContext
from . import docs_ui, http_limits, logs
from .compat import ServerHooks, health_response
from .drain import SignalDrain
from .handler import PredictEndpoint, key_accepted
from .metrics import Metrics
from .pool import RUNNING, Pool
from .validation import body_validator, openapi

logger = logging.getLogger("litserve")


class LitApp(Starlette):
    """The Starlette app ``create_app`` returns: the model route, the probes, and the worker pool."""

    url: str | None = None  # where LitServer.run listens, for the start banner

    def __init__(self, api: LitAPI, settings: Settings) -> None:
        self.api = api
        self.settings = settings
        devices = resolve_devices(settings.accelerator, settings.devices, settings.workers_per_device)
        self.metrics = Metrics(settings.api_path)
        self.pool = Pool(
            api,
            devices,
            max_queue_size=settings.max_queue_size,
            startup_timeout=settings.startup_timeout,
            metrics=self.metrics,
            log_level=settings.log_level,
            timeout=settings.timeout,
            hung_grace=settings.hung_grace,
            heartbeat_timeout=settings.heartbeat_timeout,
            shutdown_grace=settings.shutdown_grace,
        )
        self.extras = ServerHooks(settings.callbacks, settings.loggers, settings.middlewares)
        self.extras.attach(api, self.pool)
        request_model = api.request_model()
        predict: Any = PredictEndpoint(
            self.pool, self.metrics, settings, validate=body_validator(request_model), stream=api.stream
        )
        predict = self.extras.wrap(predict, api, lambda: self)
        tools = [ToolTarget(api, settings.api_path, self.pool, settings.timeout)] if getattr(api, "mcp", None) else []
        self._key = settings.api_key.encode() if settings.api_key else None
        self._openapi = openapi(
            type(api).__name__,
            settings.api_path,
            request_model,
            api.response_model(),
            stream=api.stream,
            auth=self._key is not None,
        )
        spec = getattr(api, "spec", None)
        if spec is not None:  # the spec's routes replace the model route in the document too
            self._openapi = spec.openapi(self._openapi, settings.api_path)
        if spec is None:
            model_routes: list[BaseRoute] = [Route(settings.api_path, predict, methods=["POST"])]
        else:  # the spec's routes (OpenAI's /v1/...) replace the predict route
            ctx = SpecContext(self.pool, self.metrics, settings.timeout, settings.max_payload_size, settings.api_key)
            model_routes = spec.routes(ctx)
            for route in model_routes:  # authorize and the request callbacks guard a spec's routes too
                if isinstance(route, Route) and route.methods and "POST" in route.methods:
                    route.app = self.extras.wrap(route.app, api, lambda: self)
        routes = [
            *model_routes,
            Route("/health", self._health_route, methods=["GET"]),
            Route("/ready", self._ready_route, methods=["GET"]),
            Route("/info", self._info_route, methods=["GET"]),
            Route("/metrics", self._metrics_route, methods=["GET"]),
            *docs_ui.routes(self._openapi, type(api).__name__),
            *mcp_routes(tools, settings.api_key),
        ]
        model_paths = [path for route in model_routes if (path := getattr(route, "path", None))]
        super().__init__(routes=routes, lifespan=self._lifespan, exception_handlers=docs_ui.error_handlers(model_paths))
        self.extras.install(self)  # middlewares=, and the apps loggers mount
        self.pool.on_started = self._log_started

    def _log_started(self) -> None:
        """The start banner, once the workers are ready, however the app is served."""
        served = [
            (method, route.path)
            for route in self.routes
            if isinstance(route, Route) and "{" not in route.path
            for method in sorted(route.methods or ())
            if method != "HEAD"
        ]
        workers = [(w["name"], w["device"], w["pid"]) for w in self.pool.workers_info()]
        logs.log_lines(logs.banner(type(self.api).__name__, served, workers, auth=self._key is not None, url=self.url))

    # -- life -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the workers now and wait until they are ready (raises WorkerStartupError)."""
        await self.pool.ensure_started()

    async def stop(self) -> None:
        """Let in-flight requests finish, then stop the workers: all within ``shutdown_grace`` from
        the first drain or stop (the pool owns that one deadline)."""
        await self.pool.stop()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LitApp]:
        """``async with model_app.running():`` in a host app's lifespan starts and stops the workers.

        Meanwhile SIGTERM/SIGINT drain before the host server stops, whichever server it is
        (``core/drain.py``); the app's own lifespan runs this too.
        """
        http_limits.install(self.connection_limits(), self.metrics)  # under uvicorn: read deadlines, bound
        await self.start()
        drain = SignalDrain(self)
        drain.install()
        try:
            yield self
        finally:
            try:
                await self.stop()
            finally:
                drain.uninstall()

    def connection_limits(self) -> http_limits.Limits:
        """The per-connection limits of these settings, as ``core/http_limits.py`` enforces them."""
        s = self.settings
        return http_limits.Limits(s.header_timeout, s.body_deadline, s.keep_alive_timeout, s.max_connections)

    def drain(self) -> None:
        """Stop taking requests (503, /ready turns 503) while those in flight finish."""
        self.pool.begin_drain()

    def set_log_level(self, level: int | str) -> None:
        """The workers' log level, for workers started from now on (``LitServer.run(log_level=)``)."""
        self.settings = self.settings.replace(log_level=level)
        self.pool.log_level = self.settings.log_level

    @asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        self.extras.started(self)
        try:
            async with self.running():
                yield
        finally:
            self.extras.stopped(self)

    # -- probes and documents -------------------------------------------------------------------------
    async def _health_route(self, request: Request) -> Response:
        return await health_response([self.api])  # LitServe's plain "ok", consulting LitAPI.health()

    async def _ready_route(self, request: Request) -> Response:
        pool = self.pool
        if pool.state != RUNNING:
            reason = {"new": "not started", "starting": "workers are starting"}.get(pool.state, pool.state)
            return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
        if pool.ready_workers == 0:
            return JSONResponse({"status": "not ready", "reason": "no worker is ready"}, status_code=503)
        return JSONResponse({"status": "ready", "workers_ready": pool.ready_workers})

    async def _info_route(self, request: Request) -> Response:
        given = request.headers.get("x-api-key")
        if not key_accepted(self._key, given.encode("latin-1") if given is not None else None):
            return _send_error_response(Unauthorized("missing or invalid X-API-Key header"))
        pool, api = self.pool, self.api
        settings = {
            **self.settings.public(),
            "devices": pool.devices,
            "max_batch_size": api.max_batch_size,
            "batch_timeout": api.batch_timeout,
            "stream": api.stream,
            "max_concurrency": api.max_concurrency,
            "auth": self._key is not None,
        }
        return JSONResponse(
            {
                "state": pool.state,
                "workers": pool.workers_info(),
                "queued": pool.scheduler.queued,
                "in_flight": len(pool.calls),
                "settings": settings,
            }
        )

    async def _metrics_route(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)


def create_app(api: LitAPI, **settings: Unpack[SettingsArgs]) -> LitApp:
    """Build the ASGI app serving ``api``. Nothing is spawned until the app starts.

    Every keyword is a server setting (``help(litserve.Settings)`` says what each means); they are
    checked here, once, and a bad one raises ``ConfigurationError`` naming it. The app is an ordinary
    Starlette app: ``uvicorn mod:app``, ``gunicorn -k uvicorn.workers.UvicornWorker mod:app``, or
    ``host.mount("/model", app)`` (then ``async with app.running():`` in the host's lifespan starts
    the workers with it; without it the first request does).
    """
    if not isinstance(api, LitAPI):
        raise ConfigurationError(f"api must be a LitAPI instance, got {type(api).__name__}")
    spec = getattr(api, "spec", None)
    if spec is not None:
        spec.bind(api)  # before check(): a spec supplies hooks and sets the API's mode
    api.check()
    checks.check_api(api)
    logs.configure()
    return LitApp(api, Settings.build(**settings))


def _send_error_response(exc: RequestError) -> Response:
    return Response(exc.body(), status_code=exc.status, headers=exc.headers, media_type="application/json")
