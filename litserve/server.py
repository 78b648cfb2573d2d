"""``LitServer(api, **settings).run()``: the one-line way to serve an API (or several) with uvicorn.

On SIGTERM/SIGINT it drains: ``/ready`` and the model route answer 503 at once, requests in flight get
up to ``shutdown_grace`` seconds to finish, then uvicorn stops and the lifespan stops the workers. A
second signal skips the wait. The drain lives in the app (``core/drain.py``), so ``uvicorn mod:app``,
gunicorn and ``litserve serve`` drain the same way.
"""

from __future__ import annotations

import inspect
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import uvicorn
from typing_extensions import Unpack

from . import checks
from .api import LitAPI
from .config import ServerArgs
from .core import logs
from .core.app import LitApp, create_app
from .core.client_file import client_url, sample_request, write_client_file
from .core.runner import run_uvicorn

logger = logging.getLogger("litserve")


class LitServer:
    """Serve one ``LitAPI``, or a list of them, over HTTP: ``create_app(apis, **settings)`` run by uvicorn.

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
    workers_per_device, timeout, max_queue_size, max_payload_size, startup_timeout, shutdown_grace,
    api_key, log_level, healthcheck_path, info_path, model_metadata, middlewares, callbacks, loggers, ...
    LitServe's old per-server model settings (``api_path``, ``stream``, ``max_batch_size``,
    ``batch_timeout``, ``spec``) still work with one API: they are forwarded to it with a
    DeprecationWarning, as LitServe does. Several APIs: ``LitServer([a, b])``, each with its own
    ``LitAPI(api_path=...)``. The hooks and the model settings (batching, streaming,
    concurrency) are in ``help(litserve.LitAPI)``; serving under uvicorn, gunicorn or inside another
    app in ``help(litserve.create_app)``; starting and stopping in ``help(LitServer.run)``.
    The guides, the README and the docs folder, ship in the source distribution of
    ``litserve-zmq`` (``pip download --no-deps --no-binary :all: litserve-zmq``).
    """

    def __init__(self, lit_api: LitAPI | Sequence[LitAPI], **settings: Unpack[ServerArgs]) -> None:
        self.app: LitApp = create_app(lit_api, **settings)
        self.app.extras.server = self  # server-side callbacks get this LitServer as ``litserver``

    def run(
        self,
        host: str = "0.0.0.0",
        port: int = 8000,
        num_api_servers: int | None = None,
        log_level: str = "info",
        generate_client_file: bool = True,
        api_server_worker_type: str | None = None,
        pretty_logs: bool = False,
        **uvicorn_options: Any,
    ) -> None:
        """Serve until SIGTERM/SIGINT. ``log_level`` is uvicorn's, the server's and the workers'.

        The port is bound before the workers start (and load the model): a busy port fails at once,
        in one line naming it (exit status 1), as does a script that calls ``run()`` outside
        ``if __name__ == "__main__":``. A ``client.py`` that you wrote is never replaced.

        ``num_api_servers``, ``api_server_worker_type`` and ``pretty_logs`` are LitServe's and have no
        meaning here (one asyncio process serves HTTP): they are accepted with a warning. Other keyword
        arguments go to ``uvicorn.Config`` when it knows them; unknown ones are dropped with a warning.
        """
        app = self.app
        _warn_unused(num_api_servers, api_server_worker_type, pretty_logs)
        options = _uvicorn_options(uvicorn_options)
        app.set_log_level(log_level)
        logs.configure(app.settings.log_level)
        try:
            checks.check_main_guard()
            port = checks.port_number(port)
            sock = checks.bind_port(host, port)
        except (checks.MissingMainGuard, checks.PortInUse) as exc:
            logger.error("%s", exc)
            sys.exit(1)
        app.url = client_url(host, port, "")
        if generate_client_file:
            sample = next((e for e in app.endpoints if getattr(e.api, "spec", None) is None), None)
            if sample is not None:
                write_client_file(host, port, sample.path, sample_request(sample.api))
        status = run_uvicorn(app, host, port, log_level=app.settings.log_level, sock=sock, **options)
        if status:
            sys.exit(status)


# uvicorn options run() sets itself, and those that cannot work with an app object in this process.
_OWN_OPTIONS = frozenset({"self", "app", "host", "port", "log_level"})
_REFUSED_OPTIONS = {
    "workers": "one process serves HTTP here; for several, run the app under gunicorn (docs/deployment.md)",
    "reload": "reload needs an import string; run `uvicorn module:app --reload` instead",
}


def _warn_unused(num_api_servers: int | None, api_server_worker_type: str | None, pretty_logs: bool) -> None:
    if num_api_servers not in (None, 1):
        warnings.warn(
            f"num_api_servers={num_api_servers!r} is ignored: one asyncio process serves HTTP and hands "
            "requests to the workers; for several HTTP processes run the app under gunicorn "
            "(docs/deployment.md)",
            UserWarning,
            stacklevel=3,
        )
    if api_server_worker_type is not None:
        warnings.warn(f"api_server_worker_type={api_server_worker_type!r} is ignored", UserWarning, stacklevel=3)
    if pretty_logs:
        warnings.warn("pretty_logs=True is ignored: litserve logs plain lines", UserWarning, stacklevel=3)


def _uvicorn_options(given: dict[str, Any]) -> dict[str, Any]:
    """The options ``uvicorn.Config`` accepts; the rest are dropped with a warning naming them."""
    known = set(inspect.signature(uvicorn.Config.__init__).parameters) - _OWN_OPTIONS
    options = {}
    for name, value in given.items():
        if name in _REFUSED_OPTIONS:
            warnings.warn(f"{name}={value!r} is ignored: {_REFUSED_OPTIONS[name]}", UserWarning, stacklevel=3)
        elif name not in known:
            warnings.warn(
                f"run() got {name}={value!r}, which neither litserve nor uvicorn knows; it is ignored",
                UserWarning,
                stacklevel=3,
            )
        else:
            options[name] = value
    return options
