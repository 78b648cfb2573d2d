"""Run a ``LitApp`` with uvicorn in this process: what ``LitServer.run`` and ``litserve serve`` share.

The drain on SIGTERM lives in the app (``core/drain.py``), so this only adds what a process that *is*
the server wants: uvicorn's graceful timeout just past ``shutdown_grace``, exit status 0 after a
stop by signal (uvicorn re-raises the signal it caught once it has stopped, which would end the
process with "Terminated"), and status 3 when the workers could not start.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import uvicorn

STARTUP_FAILED = 3  # exit status when the workers could not start (uvicorn's own is 3 too)


def run_uvicorn(app: Any, host: str, port: int, *, log_level: int | str = "info", **uvicorn_options: Any) -> int:
    """Serve ``app`` until SIGTERM/SIGINT; return the process exit status (0, or 3 if it never started)."""
    configure_logging(log_level)
    settings = getattr(app, "settings", None)  # a LitApp; any other ASGI app (a host) keeps uvicorn's default
    if settings is not None:
        uvicorn_options.setdefault("timeout_graceful_shutdown", settings.shutdown_grace + 5)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, **uvicorn_options)
    server = uvicorn.Server(config)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # What uvicorn restores and re-raises its caught signal into, once it has stopped: a no-op,
        # so a graceful stop by signal exits 0 instead of dying of that signal.
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else STARTUP_FAILED


def _stopped(sig: int, frame: Any) -> None:
    """The signal was already handled: uvicorn drained and stopped because of it."""


def configure_logging(level: int | str) -> None:
    lit = logging.getLogger("litserve")
    if not lit.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     litserve: %(message)s"))
        lit.addHandler(handler)
        lit.propagate = False
    lit.setLevel(level.upper() if isinstance(level, str) else level)
