"""litserve: write one ``LitAPI`` class, get a fast and safe HTTP inference API."""

from .api import LitAPI
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
from .server import LitServer

__version__ = "0.1.0"

__all__ = (
    "ConfigurationError",
    "LitAPI",
    "LitApp",
    "LitServeError",
    "LitServer",
    "RequestError",
    "Settings",
    "WorkerStartupError",
    "__version__",
    "create_app",
    "request_id",
    "request_ids",
    "resolve_devices",
)
