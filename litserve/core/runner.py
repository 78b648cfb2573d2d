"""Run a ``LitApp`` with uvicorn in this process: what ``LitServer.run`` and ``litserve serve`` share.

The drain on SIGTERM lives in the app (``core/drain.py``), so this only adds what a process that *is*
the server wants: uvicorn's graceful timeout just past ``shutdown_grace``, exit status 0 after a
stop by signal (uvicorn re-raises the signal it caught once it has stopped, which would end the
process with "Terminated"), and status 3 when the workers could not start.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Any

import uvicorn

from .. import checks
from . import logs
from .client_file import client_url

logger = logging.getLogger("litserve")

STARTUP_FAILED = 3  # exit status when the workers could not start (uvicorn's own is 3 too)
PORT_UNAVAILABLE = 1  # exit status when the port cannot be bound (checked before the workers start)


def run_uvicorn(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: int | str = "info",
    sock: socket.socket | None = None,
    **uvicorn_options: Any,
) -> int:
    """Serve ``app`` until SIGTERM/SIGINT; return the process exit status (0, 1 if the port is taken,
    or 3 if it never started).

    The port is bound here (or by the caller, who passes ``sock``) before uvicorn starts the app's
    lifespan, so a busy port is one line naming it, not a failure after the model loaded.
    """
    configure_logging(log_level)
    if sock is None:
        try:
            port = checks.port_number(port)
            sock = checks.bind_port(host, port)
        except checks.PortInUse as exc:
            logger.error("%s", exc)
            return PORT_UNAVAILABLE
    url = client_url(host, port, "")
    settings = getattr(app, "settings", None)  # a LitApp; any other ASGI app (a host) keeps uvicorn's default
    if settings is not None:
        uvicorn_options.setdefault("timeout_graceful_shutdown", settings.shutdown_grace + 5)
        app.url = url
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, **uvicorn_options)
    server = _Server(config, url, docs=settings is not None)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # What uvicorn restores and re-raises its caught signal into, once it has stopped: a no-op,
        # so a graceful stop by signal exits 0 instead of dying of that signal.
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else STARTUP_FAILED


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens: uvicorn does not announce sockets it was handed."""

    def __init__(self, config: uvicorn.Config, url: str, docs: bool) -> None:
        super().__init__(config)
        self.url = url
        self.docs = f", docs at {url}/docs" if docs else ""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:  # a signal during startup: it stops at once
            host = self.config.host
            where = f" (every interface, port {self.config.port})" if host in ("0.0.0.0", "::", "") else ""
            logger.info("listening on %s%s%s (Press CTRL+C to quit)", self.url, where, self.docs)


def _stopped(sig: int, frame: Any) -> None:
    """The signal was already handled: uvicorn drained and stopped because of it."""


def configure_logging(level: int | str) -> None:
    """litserve's log lines, in its one format (``core/logs.py``), at ``level``."""
    logs.configure(level)
