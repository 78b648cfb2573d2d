"""``ls.Logger``: receive what ``LitAPI.log(key, value)`` records in the workers (LitServe's API).

``self.log("latency", 0.12)`` in any hook sends one small LOG frame from the worker to the server
process (JSON, never pickle); there a single background thread hands each entry to every logger's
``process(key, value)``. So a slow logger (a network call, a file write) delays only other log
entries, never a request, and a logger that raises is logged and skipped. Without loggers,
``LitAPI.log`` does nothing and no frame is sent.

``Logger.mount(path, app)`` in a logger's ``__init__`` adds an ASGI app (a Prometheus exporter,
say) to the server at ``path``.
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import pydantic_core

log = logging.getLogger("litserve.loggers")

_STOP = object()


class Logger(ABC):
    """Subclass and implement ``process(key, value)``; pass instances as ``LitServer(loggers=...)``."""

    def __init__(self) -> None:
        self._config: dict[str, Any] = {}

    def mount(self, path: str, app: Any) -> None:
        """Serve ``app`` (any ASGI app) at ``path`` alongside the model routes."""
        self._config["mount"] = {"path": path, "app": app}

    @abstractmethod
    def process(self, key: str, value: Any) -> None:
        """Handle one entry logged with ``LitAPI.log(key, value)``; runs in the server process."""
        raise NotImplementedError


def check_loggers(loggers: Logger | Iterable[Logger] | None) -> list[Logger]:
    """The loggers as a list, or ValueError naming what is not an ``ls.Logger``."""
    if loggers is None:
        return []
    items = [loggers] if isinstance(loggers, Logger) else list(loggers)
    for item in items:
        if not isinstance(item, Logger):
            raise ValueError(f"loggers must be ls.Logger instances, got {type(item).__name__}")
    return items


def encode_entry(key: str, value: Any) -> bytes:
    """The LOG frame payload: ``[key, value]`` as JSON (values JSON cannot hold go as ``str``)."""
    return pydantic_core.to_json([str(key), value], fallback=_fallback)


def _fallback(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else str(value)


class LogDispatcher:
    """One daemon thread in the server process that feeds logged entries to the loggers."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.loggers:
            self._thread = threading.Thread(target=self._run, name="litserve-loggers", daemon=True)
            self._thread.start()

    def put(self, payload: bytes) -> None:
        """Queue one LOG payload (called from the event loop: never blocks); starts the thread if needed."""
        thread = self._thread
        if thread is None or not thread.is_alive():  # first entry, or a forked process without our thread
            self._thread = None
            self.start()
        self._queue.put(payload)

    def stop(self, timeout: float = 5.0) -> None:
        """Let the entries already queued reach the loggers, then end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                key, value = pydantic_core.from_json(item)
            except (ValueError, TypeError):
                log.warning("dropped a malformed log entry from a worker")
                continue
            for logger in self.loggers:
                try:
                    logger.process(key, value)
                except Exception:
                    log.exception("logger %s raised on %r", type(logger).__name__, key)
