"""litserve: write one ``LitAPI`` class, get a fast and safe HTTP inference API."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from .api import LitAPI
from .callbacks import Callback
from .config import Settings
from .context import request_id, request_ids
from .devices import resolve_devices
from .errors import (
    ConfigurationError,
    LitServeError,
    RequestError,
    WorkerStartupError,
)
from .loggers import Logger
from .specs.base import LitSpec

if TYPE_CHECKING:
    from . import test_examples
    from .core.app import LitApp, create_app
    from .server import LitServer
    from .specs.openai import OpenAISpec
    from .specs.openai_embedding import OpenAIEmbeddingSpec

__version__ = "0.1.0"

__all__ = (
    "Callback",
    "ConfigurationError",
    "LitAPI",
    "LitApp",
    "LitServeError",
    "LitServer",
    "LitSpec",
    "Logger",
    "OpenAIEmbeddingSpec",
    "OpenAISpec",
    "Request",
    "RequestError",
    "Response",
    "Settings",
    "WorkerStartupError",
    "__version__",
    "create_app",
    "request_id",
    "request_ids",
    "resolve_devices",
    "test_examples",
)

# Loaded on first use. Every worker process imports litserve again when it starts (to unpickle the
# API), and needs none of these: the server, the app and its HTTP stack, the OpenAI request/response
# models and the example APIs are most of what ``import litserve`` costs. A server file still gets
# them the moment it names ``ls.LitServer``.
_LAZY = {
    "LitServer": ("litserve.server", "LitServer"),
    "LitApp": ("litserve.core.app", "LitApp"),
    "create_app": ("litserve.core.app", "create_app"),
    "OpenAISpec": ("litserve.specs.openai", "OpenAISpec"),
    "OpenAIEmbeddingSpec": ("litserve.specs.openai_embedding", "OpenAIEmbeddingSpec"),
    "test_examples": ("litserve.test_examples", ""),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'litserve' has no attribute {name!r}")
    module = import_module(where[0])
    value = getattr(module, where[1]) if where[1] else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
