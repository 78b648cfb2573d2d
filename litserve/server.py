"""``LitServer(api, **settings).run()``: the one-line way to serve an API with uvicorn.

On SIGTERM/SIGINT it drains: ``/ready`` and the model route answer 503 at once, requests in flight get
up to ``shutdown_grace`` seconds to finish, then uvicorn stops and the lifespan stops the workers. A
second signal skips the wait. The drain lives in the app (``core/drain.py``), so ``uvicorn mod:app``,
gunicorn and ``litserve serve`` drain the same way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from typing_extensions import Unpack

from . import checks
from .api import LitAPI
from .config import SettingsArgs
from .core import logs
from .core.app import LitApp, create_app
from .core.client_file import client_url, sample_request, write_client_file
from .core.runner import run_uvicorn

logger = logging.getLogger("litserve")


class LitServer:
    """Serve a ``LitAPI`` over HTTP: ``create_app(api, **settings)`` run by uvicorn.

    Example::

        import litserve as ls

        class SquareAPI(ls.LitAPI):
            def setup(self, device):
                self.model = lambda x: x**2

            def decode_request(self, request):
                return request["input"]

            def predict(self, x):
                return self.model(x)

        if __name__ == "__main__":  # workers re-import this file
            ls.LitServer(SquareAPI(), accelerator="cpu").run(port=8000)

    Then ``POST /predict`` with ``{"input": 4.0}``; the API's page is ``GET /docs``.

    ``settings`` are keyword-only and checked here (a bad one raises ``ConfigurationError`` naming
    it); every one is described in ``help(litserve.Settings)``: accelerator, devices,
    workers_per_device, timeout, api_path, max_queue_size, max_payload_size, startup_timeout,
    shutdown_grace, api_key, log_level. The hooks and the model settings (batching, streaming,
    concurrency) are in ``help(litserve.LitAPI)``; serving under uvicorn, gunicorn or inside another
    app in ``help(litserve.create_app)``; starting and stopping in ``help(LitServer.run)``.
    The guides, the README and the docs folder, ship in the source distribution of
    ``litserve-zmq`` (``pip download --no-deps --no-binary :all: litserve-zmq``).
    """

    def __init__(self, api: LitAPI, *, spec: Any = None, **settings: Unpack[SettingsArgs]) -> None:
        if spec is not None:  # LitServe's spelling; the spec belongs to the API (LitAPI(spec=...))
            api.spec = spec
        self.app: LitApp = create_app(api, **settings)
        self.app.extras.server = self  # server-side callbacks get this LitServer as ``litserver``

    def run(
        self,
        host: str = "0.0.0.0",
        port: int = 8000,
        *,
        generate_client_file: bool = True,
        log_level: str = "info",
        **uvicorn_options: Any,
    ) -> None:
        """Serve until SIGTERM/SIGINT. ``log_level`` is uvicorn's, the server's and the workers'.

        Extra keyword arguments go to ``uvicorn.Config``. The port is bound before the workers start
        (and load the model): a busy port fails at once, in one line naming it (exit status 1). A
        ``client.py`` that you wrote is never replaced.
        """
        app = self.app
        app.set_log_level(log_level)
        logs.configure(app.settings.log_level)
        try:
            sock = checks.bind_port(host, port)
        except checks.PortInUse as exc:
            logger.error("%s", exc)
            sys.exit(1)
        app.url = client_url(host, port, "")
        if generate_client_file:
            write_client_file(host, port, app.settings.api_path, sample_request(app.api))
        status = run_uvicorn(app, host, port, log_level=app.settings.log_level, sock=sock, **uvicorn_options)
        if status:
            sys.exit(status)
