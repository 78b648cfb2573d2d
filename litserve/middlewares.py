"""``middlewares=``: ASGI middlewares around the whole app, given as LitServe takes them.

Each item is a middleware class (``cls(app)``), or a ``(cls, kwargs)`` tuple (``cls(app, **kwargs)``);
the first item is the outermost. Any Starlette/FastAPI ``BaseHTTPMiddleware`` subclass or pure ASGI
middleware works. They run in the server process, on every request, so they cost what they do:
leave them out for the fastest path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.middleware import Middleware

from .errors import ConfigurationError


def normalize_middlewares(middlewares: Sequence[Any] | None) -> list[Middleware]:
    """Starlette ``Middleware`` entries for ``middlewares``, or ConfigurationError saying what is wrong."""
    if middlewares is None:
        return []
    if not isinstance(middlewares, (list, tuple)):
        raise ConfigurationError(
            "middlewares must be a list of middleware classes or (class, kwargs) tuples, e.g. "
            "middlewares=[GZipMiddleware, (CORSMiddleware, {'allow_origins': ['*']})]"
        )
    out = []
    for item in middlewares:
        if isinstance(item, Middleware):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and callable(item[0]) and isinstance(item[1], dict):
            out.append(Middleware(item[0], **item[1]))
        elif callable(item) and not isinstance(item, tuple):
            out.append(Middleware(item))
        else:
            raise ConfigurationError(f"a middleware must be a class or a (class, kwargs) tuple, got {item!r}")
    return out
