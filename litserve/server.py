"""``LitServer(api, **settings).run()``: the one-line way to serve an API with uvicorn.

On SIGTERM/SIGINT it drains: ``/ready`` and the model route answer 503 at once, requests in flight get
up to ``shutdown_grace`` seconds to finish, then uvicorn stops and the lifespan stops the workers. A
second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import uvicorn

from .api import LitAPI
from .core.app import LitApp, create_app
from .errors import ServiceUnavailable

logger = logging.getLogger("litserve")


class LitServer:
    """Serve ``api`` over HTTP. Takes every setting ``create_app`` takes (see docs/settings.md)."""

    def __init__(
        self,
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
    ) -> None:
        self.app: LitApp = create_app(
            api,
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

    def run(
        self,
        host: str = "0.0.0.0",
        port: int = 8000,
        *,
        generate_client_file: bool = True,
        log_level: str = "info",
        **uvicorn_options: Any,
    ) -> None:
        """Serve until SIGTERM/SIGINT. Extra keyword arguments go to ``uvicorn.Config``."""
        _configure_logging(log_level)
        if generate_client_file:
            write_client_file(host, port, self.app.settings.api_path, _sample_request(self.app.api))
        uvicorn_options.setdefault("timeout_graceful_shutdown", self.app.settings.shutdown_grace + 5)
        config = uvicorn.Config(self.app, host=host, port=port, log_level=log_level, **uvicorn_options)
        server = _DrainingServer(config, self.app)
        server.run()
        if server.startup_failed:
            sys.exit(3)


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, with a drain before its shutdown."""

    def __init__(self, config: uvicorn.Config, app: LitApp) -> None:
        super().__init__(config)
        self.lit_app = app
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None
        self.startup_failed = False

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.should_exit and not self.started:
            self.startup_failed = True

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._drain_requested or not self.started:
            super().handle_exit(sig, frame)  # a second signal, or nothing to drain yet: stop now
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().handle_exit(sig, frame)
            return
        self._drain_requested = True  # at once, so a second signal stops without waiting
        loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        logger.info(
            "draining: refusing new requests, waiting up to %ss for those in flight",
            self.lit_app.settings.shutdown_grace,
        )
        self.lit_app.drain()
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        pool = self.lit_app.pool
        if not await pool.wait_idle(self.lit_app.settings.shutdown_grace):
            # Past the grace: answer what is left with 503 now. Left waiting, uvicorn would hold those
            # connections for its own graceful timeout and then drop them with a 500.
            logger.warning("%d request(s) still running after shutdown_grace; answering them 503", len(pool.calls))
            for call in list(pool.calls.values()):
                pool.cancel(call, ServiceUnavailable("the server is shutting down"))
        self.should_exit = True


def _configure_logging(level: str) -> None:
    lit = logging.getLogger("litserve")
    if not lit.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     litserve: %(message)s"))
        lit.addHandler(handler)
        lit.propagate = False
    lit.setLevel(level.upper() if isinstance(level, str) else level)


def _sample_request(api: LitAPI) -> Any:
    model = api.request_model()
    if model is None:
        return {"input": 4.0}
    examples: dict[Any, Any] = {float: 4.0, int: 4, str: "hello", bool: True}
    return {field.alias or name: examples.get(field.annotation, 4.0) for name, field in model.model_fields.items()}


_CLIENT = '''\
"""Posts a sample request to the litserve server started alongside this file.

Generated by LitServer.run(); set LIT_SERVER_API_KEY to send it as X-API-Key.
"""

import json
import os
import sys
import urllib.error
import urllib.request

URL = {url!r}
PAYLOAD = {payload!r}


def main():
    headers = {{"Content-Type": "application/json"}}
    if os.environ.get("LIT_SERVER_API_KEY"):
        headers["X-API-Key"] = os.environ["LIT_SERVER_API_KEY"]
    request = urllib.request.Request(URL, data=json.dumps(PAYLOAD).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    print("Status:", status)
    print("Response:", body)
    return 0 if status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
'''


def write_client_file(host: str, port: int, api_path: str, payload: Any, path: str = "client.py") -> str:
    """Write ``client.py`` posting ``payload`` to the server; never writes the API key into it."""
    reachable = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in reachable and not reachable.startswith("["):
        reachable = f"[{reachable}]"
    url = f"http://{reachable}:{port}{api_path}"
    with open(path, "w") as f:
        f.write(textwrap.dedent(_CLIENT.format(url=url, payload=payload)))
    return os.path.abspath(path)
