"""``create_app``: a Starlette app serving a ``LitAPI`` through a pool of worker processes.

The workers start in the app's lifespan. Starlette sends no lifespan events to an app mounted inside
another, so the first request starts them too, and ``LitApp.start()``/``stop()`` (or
``async with app.running()``) let a host app start them eagerly in its own lifespan.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..api import LitAPI
from ..config import Settings, make_settings
from ..devices import resolve_devices
from ..errors import ConfigurationError
from .handler import PredictEndpoint
from .metrics import Metrics
from .pool import RUNNING, Pool
from .validation import body_validator, openapi

logger = logging.getLogger("litserve")


class LitApp(Starlette):
    """The Starlette app ``create_app`` returns; ``pool`` is its worker pool."""

    pool: Pool
    settings: Settings
    api: LitAPI

    async def start(self) -> None:
        """Start the workers now and wait until they are ready (raises WorkerStartupError)."""
        await self.pool.ensure_started()

    async def stop(self) -> None:
        """Let in-flight requests finish (``shutdown_grace``), then stop the workers."""
        await self.pool.stop(self.settings.shutdown_grace)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LitApp]:
        """``async with model_app.running():`` in a host app's lifespan starts and stops the workers."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def drain(self) -> None:
        """Stop taking requests (503, /ready turns 503) while those in flight finish."""
        self.pool.begin_drain()


def create_app(
    api: LitAPI,
    *,
    accelerator: str = "auto",
    devices: int | Sequence[int] | str = "auto",
    workers_per_device: int = 1,
    timeout: float | bool | None = 30.0,
    api_path: str = "/predict",
    max_queue_size: int = 1024,
    max_payload_size: int | str = "100MB",
    startup_timeout: float = 600.0,
    shutdown_grace: float = 30.0,
    api_key: str | None = None,
    log_level: int = logging.INFO,
) -> LitApp:
    """Build the ASGI app serving ``api``. Nothing is spawned until the app starts.

    See ``litserve.config.Settings`` (and docs/settings.md) for what each setting means.
    """
    if not isinstance(api, LitAPI):
        raise ConfigurationError(f"api must be a LitAPI instance, got {type(api).__name__}")
    api.check()
    settings = make_settings(
        accelerator=accelerator,
        devices=devices,
        workers_per_device=workers_per_device,
        timeout=timeout,
        api_path=api_path,
        max_queue_size=max_queue_size,
        max_payload_size=max_payload_size,
        startup_timeout=startup_timeout,
        shutdown_grace=shutdown_grace,
        api_key=api_key,
    )
    device_list = resolve_devices(settings.accelerator, settings.devices, settings.workers_per_device)
    metrics = Metrics(settings.api_path)
    pool = Pool(
        api,
        device_list,
        max_queue_size=settings.max_queue_size,
        startup_timeout=settings.startup_timeout,
        metrics=metrics,
        log_level=log_level,
    )
    request_model, response_model = api.request_model(), api.response_model()
    predict = PredictEndpoint(
        pool,
        metrics,
        timeout=settings.timeout,
        max_payload_size=settings.max_payload_size,
        api_key=settings.api_key,
        validate=body_validator(request_model),
        stream=api.stream,
    )
    key = settings.api_key.encode() if settings.api_key else None
    schema = openapi(
        type(api).__name__, settings.api_path, request_model, response_model, stream=api.stream, auth=key is not None
    )
    info_settings = {
        **{name: value for name, value in dataclasses.asdict(settings).items() if name != "api_key"},
        "devices": device_list,
        "max_batch_size": api.max_batch_size,
        "batch_timeout": api.batch_timeout,
        "stream": api.stream,
        "max_concurrency": api.max_concurrency,
        "auth": key is not None,
    }

    def authorised(request: Request) -> bool:
        if key is None:
            return True
        given = request.headers.get("x-api-key")
        return given is not None and hmac.compare_digest(given.encode(), key)

    def unauthorised() -> Response:
        return JSONResponse({"error": "missing or invalid X-API-Key header"}, status_code=401)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if pool.state != RUNNING:
            reason = {"new": "not started", "starting": "workers are starting"}.get(pool.state, pool.state)
            return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
        if pool.ready_workers == 0:
            return JSONResponse({"status": "not ready", "reason": "no worker is ready"}, status_code=503)
        return JSONResponse({"status": "ready", "workers_ready": pool.ready_workers})

    async def info(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        return JSONResponse(
            {
                "state": pool.state,
                "workers": pool.workers_info(),
                "queued": pool.scheduler.queued,
                "in_flight": len(pool.calls),
                "settings": info_settings,
            }
        )

    async def metrics_route(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def openapi_route(request: Request) -> Response:
        return JSONResponse(schema)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await pool.ensure_started()
        try:
            yield
        finally:
            await pool.stop(settings.shutdown_grace)

    routes = [
        Route(settings.api_path, predict, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi_route, methods=["GET"]),
    ]
    app = LitApp(routes=routes, lifespan=lifespan)
    app.pool = pool
    app.settings = settings
    app.api = api
    return app
