r"""``create_app``: a Starlette app serving one or several ``LitAPI``\ s, each through its own worker pool.

Each API is an ``Endpoint``: its route (``api_path``, or its spec's routes), its pool of workers
(devices, batching, timeout), its metrics labelled with its path. The app adds one set of probes
(``/health``, ``/ready``, ``/info``, ``/metrics``) over all of them, on one port.

The workers start in the app's lifespan. Starlette sends no lifespan events to an app mounted inside
another, so the first request starts them too, and ``LitApp.start()``/``stop()`` (or
``async with app.running()``) let a host app start them eagerly in its own lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send
from typing_extensions import Unpack

from .. import checks
from ..api import LitAPI
from ..config import ServerArgs, Settings, forward_model_settings
from ..devices import resolve_devices
from ..errors import ConfigurationError, ServiceUnavailable, Unauthorized, error_body
from ..mcp import ToolTarget, mcp_routes
from ..specs.exchange import SpecContext
from . import docs_ui, http_limits, logs
from .compat import ServerHooks, health_response
from .drain import SignalDrain, StartInterrupt
from .handler import PredictEndpoint, key_accepted, send_raw_error
from .metrics import AppMetrics, Metrics
from .pool import RUNNING, Pool
from .validation import body_validator, openapi

logger = logging.getLogger("litserve")


@dataclass
class Endpoint:
    """One API of the app: its path, its pool of workers, its metrics and its routes."""

    api: LitAPI
    path: str
    pool: Pool
    metrics: Metrics
    routes: list[BaseRoute]


class LitApp(Starlette):
    """The Starlette app ``create_app`` returns: each API's routes and pool, and one set of probes."""

    url: str | None = None  # where LitServer.run listens, for the start banner

    def __init__(self, apis: Sequence[LitAPI], settings: Settings) -> None:
        self.settings = settings
        self.metrics = AppMetrics()
        self.extras = ServerHooks(settings.callbacks, settings.loggers, settings.middlewares)
        self._key = settings.api_key.encode() if settings.api_key else None
        # Model routes that nothing wraps (no authorize, no request callbacks), by path: see __call__.
        self._direct: dict[str, PredictEndpoint] = {}
        self.endpoints = [self._endpoint(api) for api in apis]
        self._openapi = self._openapi_document()
        routes = [route for endpoint in self.endpoints for route in endpoint.routes]
        routes = _first_of_each(routes)  # two specs may both offer GET /v1/models: the first answers
        for direct, predict in list(self._direct.items()):  # only where Starlette would pick it too
            first = next(r for r in routes if isinstance(r, Route) and r.path == direct and "POST" in (r.methods or ()))
            if first.app is not predict:
                del self._direct[direct]
        tools = [
            ToolTarget(e.api, e.path, e.pool, e.metrics, settings.timeout)
            for e in self.endpoints
            if getattr(e.api, "mcp", None)
        ]
        routes += [
            Route(settings.healthcheck_path, self._health_route, methods=["GET"]),
            Route("/ready", self._ready_route, methods=["GET"]),
            Route(settings.info_path, self._info_route, methods=["GET"]),
            Route("/metrics", self._metrics_route, methods=["GET"]),
            *docs_ui.routes(self._openapi, self._title),
            *mcp_routes(tools, settings.api_key),
        ]
        model_routes = [  # each once: two specs may share GET /v1/models
            f"{method} {r.path}"
            for e in self.endpoints
            for r in e.routes
            if isinstance(r, Route)
            for method in ("POST", "GET")  # not the HEAD that comes with GET, nor a CORS preflight's OPTIONS
            if method in (r.methods or ())
        ]
        model_routes = list(dict.fromkeys(model_routes))
        super().__init__(
            routes=routes, lifespan=self._lifespan, exception_handlers=docs_ui.error_handlers(model_routes)
        )
        self.extras.install(self)  # middlewares=, and the apps loggers mount
        for pool in self.pools:
            pool.on_started = self._log_started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A ``POST`` to a model route goes straight to its endpoint; everything else through Starlette.

        Starlette's middleware stack and router (error middleware, exception middleware, route
        matching, each wrapping ``send``) cost about as much per request as the rest of the app's
        side of a request (benchmarks/README.md). The model route needs none of it: it answers
        every error itself, as JSON, and never raises one for a middleware to render. With
        ``middlewares=`` (or ``add_middleware``), or hooks around the route, every request takes
        the full stack, so those still see it.
        """
        if scope["type"] == "http" and scope["method"] == "POST" and not self.user_middleware:
            endpoint = self._direct.get(_route_path(scope))
            if endpoint is not None:
                scope["app"] = self
                try:
                    await endpoint(scope, receive, send)
                except Exception:  # a bug of ours: answer 500 if nothing was sent, and let the server log it
                    with contextlib.suppress(Exception):
                        await send_raw_error(send, 500, error_body("Internal Server Error"), b"")
                    raise
                return
        await super().__call__(scope, receive, send)

    @property
    def _title(self) -> str:
        return " + ".join(type(e.api).__name__ for e in self.endpoints)

    def _log_started(self) -> None:
        """The start banner, once every API's workers are ready, however the app is served."""
        if any(pool.state != RUNNING for pool in self.pools):
            return  # another API's workers are still starting: its pool calls this again when ready
        served = [
            (method, route.path)
            for route in self.routes
            if isinstance(route, Route) and "{" not in route.path
            for method in sorted(route.methods or ())
            if method != "HEAD"
        ]
        # Each API's workers count from worker-0: with several APIs, the line says whose worker it is.
        several = len(self.endpoints) > 1
        workers = [
            (w["name"], f"{w['device']} {e.path}" if several else w["device"], w["pid"])
            for e in self.endpoints
            for w in e.pool.workers_info()
        ]
        logs.log_lines(logs.banner(self._title, served, workers, auth=self._key is not None, url=self.url))

    def _endpoint(self, api: LitAPI) -> Endpoint:
        """An API's pool, metrics and routes: its ``api_path`` route, or the routes of its spec."""
        settings = self.settings
        path = api.api_path
        devices = resolve_devices(settings.accelerator, settings.devices, settings.workers_for(path))
        metrics = self.metrics.route(path)
        pool = Pool(
            api,
            devices,
            max_queue_size=settings.max_queue_size,
            startup_timeout=settings.startup_timeout,
            metrics=metrics,
            log_level=settings.log_level,
            timeout=settings.timeout,
            hung_grace=settings.hung_grace,
            stream_buffer=settings.stream_buffer,
            heartbeat_timeout=settings.heartbeat_timeout,
            shutdown_grace=settings.shutdown_grace,
        )
        self.extras.attach(api, pool)
        spec = getattr(api, "spec", None)
        if spec is not None:  # the spec's routes (OpenAI's /v1/...) replace the predict route
            ctx = SpecContext(pool, metrics, settings.timeout, settings.max_payload_size, settings.api_key)
            routes: list[BaseRoute] = spec.routes(ctx)
            for route in routes:  # authorize and the request callbacks guard a spec's routes too
                if isinstance(route, Route) and route.methods and "POST" in route.methods:
                    route.app = self.extras.wrap(route.app, api, lambda: self)
        else:
            validate = body_validator(api.request_model())
            predict = PredictEndpoint(pool, metrics, settings, validate=validate, stream=api.stream)
            wrapped: Any = self.extras.wrap(predict, api, lambda: self)  # unchanged when no hook is configured
            if wrapped is predict:
                self._direct[path] = predict
            routes = [Route(path, wrapped, methods=["POST"])]
        return Endpoint(api, path, pool, metrics, routes)

    # -- what a single-API app was, and what tests and host apps read -----------------------------------
    @property
    def api(self) -> LitAPI:
        """The first API (the only one, in a single-API app)."""
        return self.endpoints[0].api

    @property
    def pool(self) -> Pool:
        """The first API's pool (the only one, in a single-API app); ``endpoints`` has them all."""
        return self.endpoints[0].pool

    @property
    def pools(self) -> list[Pool]:
        return [endpoint.pool for endpoint in self.endpoints]

    # -- life -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every API's workers now and wait until they are ready (raises WorkerStartupError)."""
        results = await asyncio.gather(*(pool.ensure_started() for pool in self.pools), return_exceptions=True)
        for result in results:  # every start has settled, so a failure is raised with nothing half-started
            if isinstance(result, BaseException):
                raise result
        _freeze_startup_objects()

    async def stop(self) -> None:
        """Let in-flight requests finish, then stop every API's workers: all within ``shutdown_grace``
        from the first drain or stop (each pool owns that one deadline)."""
        await asyncio.gather(*(pool.stop() for pool in self.pools))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LitApp]:
        """``async with model_app.running():`` in a host app's lifespan starts and stops the workers.

        Meanwhile SIGTERM/SIGINT drain before the host server stops, whichever server it is
        (``core/drain.py``); the app's own lifespan runs this too.
        """
        http_limits.install(self.connection_limits(), self.metrics)  # under uvicorn: read deadlines, bound
        drain = SignalDrain(self)
        stopping: list[asyncio.Task[None]] = []

        def interrupt_start() -> None:  # Ctrl-C while the models load: stop now, not once they have loaded
            logger.info("interrupted while the workers were starting: stopping them")
            stopping.append(asyncio.ensure_future(self.stop()))  # kills the workers in setup: start() fails

        try:
            with StartInterrupt(interrupt_start) as interrupt:
                try:
                    await self.start()
                except Exception:
                    if not interrupt.interrupted:
                        raise
            if interrupt.interrupted:
                # The host server had the signal too: it stops as soon as this startup returns.
                await asyncio.gather(*stopping)
            else:
                drain.install()
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
        for pool in self.pools:
            pool.begin_drain()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request is in flight in any pool: at most ``timeout`` seconds, or by the drain's
        deadline when None. True if it got there."""
        results = await asyncio.gather(*(pool.wait_idle(timeout) for pool in self.pools))
        return all(results)

    def fail_in_flight(self, reason: str) -> int:
        """Answer every request still in flight with 503 ``reason`` (past the drain's grace); how many."""
        failed = 0
        for pool in self.pools:
            for call in list(pool.calls.values()):
                pool.cancel(call, ServiceUnavailable(reason))
                failed += 1
        return failed

    def set_log_level(self, level: int | str) -> None:
        """The workers' log level, for workers started from now on (``LitServer.run(log_level=)``)."""
        self.settings = self.settings.replace(log_level=level)
        for pool in self.pools:
            pool.log_level = self.settings.log_level

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
        return await health_response([e.api for e in self.endpoints])  # LitServe's "ok", asking LitAPI.health()

    async def _ready_route(self, request: Request) -> Response:
        for endpoint in self.endpoints:
            pool = endpoint.pool
            where = f" ({endpoint.path})" if len(self.endpoints) > 1 else ""
            if pool.state != RUNNING:
                reason = {"new": "not started", "starting": "workers are starting"}.get(pool.state, pool.state)
                return JSONResponse({"status": "not ready", "reason": reason + where}, status_code=503)
            if pool.ready_workers == 0:
                return JSONResponse({"status": "not ready", "reason": "no worker is ready" + where}, status_code=503)
        # A full queue keeps readiness: a busy replica answers 503 + Retry-After per request, and
        # leaving the rotation would only push its load onto the others (docs/scale-out.md). The body
        # says how busy it is.
        pools = self.pools
        return JSONResponse(
            {
                "status": "ready",
                "workers_ready": sum(pool.ready_workers for pool in pools),
                "capacity": sum(pool.capacity for pool in pools),  # requests the ready workers run at once
                "free": sum(pool.free_slots for pool in pools),  # batches they could start right now
                "waiting": sum(pool.scheduler.waiting for pool in pools),  # accepted, not started
            }
        )

    async def _info_route(self, request: Request) -> Response:
        given = request.headers.get("x-api-key")
        if not key_accepted(self._key, given.encode("latin-1") if given is not None else None):
            error = Unauthorized("missing or invalid X-API-Key header")
            return Response(error.body(), status_code=error.status, media_type="application/json")
        apis = [self._api_info(endpoint) for endpoint in self.endpoints]
        first = apis[0]
        return JSONResponse(
            {
                # One API: its state at the top, as before; several: each under "apis".
                "state": first["state"] if len(apis) == 1 else _overall([a["state"] for a in apis]),
                "workers": [w for a in apis for w in a["workers"]],
                "queued": sum(a["queued"] for a in apis),
                "in_flight": sum(a["in_flight"] for a in apis),
                "settings": {**self.settings.public(), **first["settings"], "auth": self._key is not None},
                "model": self.settings.model_metadata,
                "apis": apis,
            }
        )

    def _api_info(self, endpoint: Endpoint) -> dict[str, Any]:
        pool, api = endpoint.pool, endpoint.api
        return {
            "path": endpoint.path,
            "api": type(api).__name__,
            "state": pool.state,
            "workers": pool.workers_info(),
            "queued": pool.scheduler.waiting,  # accepted, not started: what max_queue_size bounds
            "in_flight": len(pool.calls),
            "settings": {
                "devices": pool.devices,
                "max_batch_size": api.max_batch_size,
                "batch_timeout": api.batch_timeout,
                "stream": api.stream,
                "max_concurrency": api.max_concurrency,
                "spec": type(api.spec).__name__ if getattr(api, "spec", None) is not None else None,
            },
        }

    async def _metrics_route(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    def _openapi_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for endpoint in self.endpoints:
            api = endpoint.api
            one = openapi(
                type(api).__name__,
                endpoint.path,
                api.request_model(),
                api.response_model(),
                stream=api.stream,
                auth=self._key is not None,
            )
            if not doc:
                doc = one
            else:
                doc["paths"].update(one["paths"])
                doc["components"]["schemas"].update(one["components"]["schemas"])
                doc["components"].update({k: v for k, v in one["components"].items() if k != "schemas"})
        for endpoint in self.endpoints:
            spec = getattr(endpoint.api, "spec", None)
            if spec is not None:  # the spec's routes replace the model route in the document too
                doc = spec.openapi(doc, endpoint.path)
        return doc


def create_app(apis: LitAPI | Sequence[LitAPI], **settings: Unpack[ServerArgs]) -> LitApp:
    """Build the ASGI app serving ``apis`` (one ``LitAPI`` or a list). Nothing is spawned until it starts.

    Every keyword is a server setting (``help(litserve.Settings)`` says what each means); they are
    checked here, once, and a bad one raises ``ConfigurationError`` naming it. The app is an ordinary
    Starlette app: ``uvicorn mod:app``, ``gunicorn -k uvicorn_worker.UvicornWorker mod:app``, or
    ``host.mount("/model", app)`` (then ``async with app.running():`` in the host's lifespan starts
    the workers with it; without it the first request does).
    """
    api_list = _api_list(apis)
    given = forward_model_settings(api_list, dict(settings))
    for api in api_list:
        spec = getattr(api, "spec", None)
        if spec is not None:
            spec.bind(api)  # before check(): a spec supplies hooks and sets the API's mode
        api.check()
        checks.check_api(api)
    logs.configure()
    checked = Settings.build(**given)
    _check_paths(api_list, checked)
    return LitApp(api_list, checked)


def _api_list(apis: LitAPI | Sequence[LitAPI]) -> list[LitAPI]:
    api_list = [apis] if isinstance(apis, LitAPI) else list(apis) if isinstance(apis, (list, tuple)) else None
    if not api_list:
        what = "an empty list" if api_list == [] else type(apis).__name__
        raise ConfigurationError(f"expected a LitAPI instance or a list of them, got {what}")
    for api in api_list:
        if not isinstance(api, LitAPI):
            raise ConfigurationError(f"api must be a LitAPI instance, got {type(api).__name__}")
    if len({id(api) for api in api_list}) != len(api_list):
        raise ConfigurationError("the same LitAPI instance is listed twice; create one per route")
    return api_list


def _check_paths(apis: list[LitAPI], settings: Settings) -> None:
    """Each API on its own path, none on a probe's; a workers_per_device dict names only real paths."""
    taken = {settings.healthcheck_path, "/ready", settings.info_path, "/metrics", "/openapi.json"}
    seen: set[str] = set()
    for api in apis:
        if getattr(api, "spec", None) is not None:
            continue  # its routes are the spec's
        if api.api_path in seen:
            raise ConfigurationError(f"two APIs share api_path {api.api_path!r}; give each LitAPI(api_path=...)")
        if api.api_path in taken:
            raise ConfigurationError(f"api_path {api.api_path!r} is taken by a probe; choose another")
        seen.add(api.api_path)
    if isinstance(settings.workers_per_device, dict):
        unknown = sorted(set(settings.workers_per_device) - {api.api_path for api in apis})
        if unknown:
            raise ConfigurationError(
                f"workers_per_device names {', '.join(unknown)}, which no API serves; "
                f"the APIs' paths are {', '.join(api.api_path for api in apis)}"
            )


def _first_of_each(routes: list[BaseRoute]) -> list[BaseRoute]:
    out: list[BaseRoute] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for route in routes:
        key = (getattr(route, "path", ""), frozenset(getattr(route, "methods", None) or ()))
        if key[0] and key in seen:
            continue
        seen.add(key)
        out.append(route)
    return out


def _overall(states: list[str]) -> str:
    return states[0] if len(set(states)) == 1 else "mixed"


def _route_path(scope: Scope) -> str:
    """The path as the app's routes see it: without the prefix it is mounted under (``root_path``)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


_frozen = False


def _freeze_startup_objects() -> None:
    """Move what exists once the first app started (modules, the app, its routes) out of the cyclic
    collector's view, once per process.

    Those objects live as long as the process; otherwise every full collection walks all of them,
    every few thousand requests, pausing the loop for tens of milliseconds. Garbage is collected
    first, so nothing dead is kept; frozen objects are still freed by reference counting. Once per
    process, so a process that builds many apps (a test suite) freezes only the first one's.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
