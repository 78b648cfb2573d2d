"""litserve's log lines: one format in the app process and in the workers, and the start banner.

Every line litserve writes looks like uvicorn's (``INFO:     litserve: ...``), whether the app runs
under ``LitServer.run``, ``uvicorn``, gunicorn, or mounted in another app; a worker's lines name the
worker and its pid (``INFO:     litserve worker-0[4242]: ...``), and so do the lines the user's hooks
log there. When the host application configured logging itself (a handler on the root logger),
litserve adds no handler of its own and its records go to the host's handlers instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

LOGGER = "litserve"
_HANDLER_NAME = "litserve-default"


class LitFormatter(logging.Formatter):
    """``LEVEL:`` padded to uvicorn's width, then ``litserve`` and where the line comes from."""

    def __init__(self, source: str = "") -> None:
        super().__init__()
        self.source = source

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname + ':':<9} litserve{self.source}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _level(level: int | str | None) -> int | None:
    if level is None:
        return None
    if isinstance(level, str):
        return logging.getLevelName(level.upper())  # type: ignore[no-any-return]
    return level


def configure(level: int | str | None = None) -> logging.Logger:
    """Give the ``litserve`` logger its handler (unless the host configured logging) and its level."""
    logger = logging.getLogger(LOGGER)
    ours = [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]
    if not ours and not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(LitFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    wanted = _level(level)
    if wanted is not None:
        logger.setLevel(wanted)
    elif logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


def configure_worker(name: str, level: int | str) -> None:
    """In a spawned worker: every record (litserve's and the user's hooks') in litserve's format."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LitFormatter(f" {name}[{os.getpid()}]"))
    root.handlers = [handler]
    root.setLevel(_level(level) or logging.INFO)
    logging.getLogger(LOGGER).propagate = True


def banner(
    title: str,
    routes: Iterable[tuple[str, str]],
    workers: Iterable[tuple[str, str, Any]],
    *,
    auth: bool,
    url: str | None = None,
) -> list[str]:
    """The lines logged once the workers are ready: what is served, where, behind which key, on what."""
    by_method: dict[str, list[str]] = {}
    for method, path in routes:
        by_method.setdefault(method, []).append(path)
    served = "; ".join(f"{method} {', '.join(paths)}" for method, paths in by_method.items())
    workers = list(workers)
    where = f" at {url}" if url else ""
    lines = [f"{title} ready{where} with {len(workers)} worker(s): {served}"]
    lines.append(
        "API key: on (clients send X-API-Key; /health, /ready, /metrics, /docs and /openapi.json stay open)"
        if auth
        else "API key: off (set LIT_SERVER_API_KEY or api_key= to require one)"
    )
    lines.extend(f"{name:<10} {device:<8} pid {pid}" for name, device, pid in workers)
    return lines


def log_lines(lines: Iterable[str]) -> None:
    logger = logging.getLogger(LOGGER)
    for line in lines:
        logger.info("%s", line)
