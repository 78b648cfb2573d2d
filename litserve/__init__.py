"""litserve: write one ``LitAPI`` class, get a fast and safe HTTP inference API."""

from starlette.requests import Request
from starlette.responses import Response

from . import test_examples
from .api import LitAPI
from .callbacks import Callback
from .config import Settings
from .context import request_id, request_ids
from .core.app import LitApp, create_app
from .devices import resolve_devices
from .errors import (
    ConfigurationError,
    LitServeError,
    RequestError,
    WorkerStartupError,
)
from .loggers import Logger
from .server import LitServer
from .specs.base import LitSpec
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
