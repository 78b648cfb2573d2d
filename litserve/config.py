"""The server's settings: checked once, when the app is created, so a typo fails at start, not at 3 a.m.

Every setting is a keyword argument of ``create_app`` and ``LitServer``; this is the one place that
says what each means, its default, and what values it accepts. Model settings (batching, streaming,
concurrency) live on the ``LitAPI`` instead, because the workers need them too.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ConfigurationError

API_KEY_ENV = "LIT_SERVER_API_KEY"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "ki": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "mi": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "gi": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
    "ti": 2**40,
}


@dataclass(frozen=True)
class Settings:
    """What ``create_app(api, **settings)`` accepts.

    Attributes:
        accelerator: ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"gpu"``), ``"mps"``.
        devices: ``"auto"`` (every visible device), a count, or a list of device ids.
        workers_per_device: worker processes per device, each with its own copy of the model.
        timeout: seconds from a request's arrival to its response (to each chunk, when streaming);
            past it the client gets 504. ``None`` or ``False`` waits forever.
        api_path: the path of the model route (``POST``).
        max_queue_size: requests that may wait for a worker; beyond it, 503 with Retry-After.
        max_payload_size: largest request body, in bytes or as ``"10MB"``; beyond it, 413.
        startup_timeout: seconds a worker's ``setup`` may take before it counts as failed.
        shutdown_grace: seconds in-flight requests get to finish when the server stops.
        api_key: the key clients must send in ``X-API-Key``; by default ``$LIT_SERVER_API_KEY``
            read when the app is created. ``""`` turns authentication off.
    """

    accelerator: str = "auto"
    devices: int | Sequence[int] | str = "auto"
    workers_per_device: int = 1
    timeout: float | None = 30.0
    api_path: str = "/predict"
    max_queue_size: int = 1024
    max_payload_size: int = 100 * 10**6
    startup_timeout: float = 600.0
    shutdown_grace: float = 30.0
    api_key: str | None = None


def make_settings(
    *,
    accelerator: str = "auto",
    devices: int | Sequence[int] | str = "auto",
    workers_per_device: int = 1,
    timeout: float | bool | None = 30.0,
    api_path: str = "/predict",
    max_queue_size: int = 1024,
    max_payload_size: int | str = "100MB",
    startup_timeout: float = 600.0,
    shutdown_grace: float = 30.0,
    api_key: str | None = None,
) -> Settings:
    """Validate and normalise the settings; raise ConfigurationError naming the bad one."""
    if timeout is False or timeout is None:
        timeout = None
    elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or math.isinf(timeout):
        raise ConfigurationError(f"timeout must be a number of seconds > 0, or None/False, got {timeout!r}")
    if not isinstance(api_path, str) or not api_path.startswith("/"):
        raise ConfigurationError(f"api_path must start with '/', got {api_path!r}")
    if isinstance(max_queue_size, bool) or not isinstance(max_queue_size, int) or max_queue_size < 1:
        raise ConfigurationError(f"max_queue_size must be an int >= 1, got {max_queue_size!r}")
    for name, value in (("startup_timeout", startup_timeout), ("shutdown_grace", shutdown_grace)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    elif not isinstance(api_key, str):
        raise ConfigurationError("api_key must be a string")
    return Settings(
        accelerator=accelerator,
        devices=devices,
        workers_per_device=workers_per_device,
        timeout=None if timeout is None else float(timeout),
        api_path=api_path,
        max_queue_size=max_queue_size,
        max_payload_size=parse_size(max_payload_size),
        startup_timeout=float(startup_timeout),
        shutdown_grace=float(shutdown_grace),
        api_key=api_key or None,
    )


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string like ``"10MB"`` (decimal) or ``"10MiB"`` (binary)."""
    if isinstance(value, bool):
        raise ConfigurationError(f"max_payload_size must be bytes or a size like '10MB', got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise ConfigurationError(f"max_payload_size must be bytes or a size like '10MB', got {value!r}")
    if size < 1:
        raise ConfigurationError(f"max_payload_size must be at least 1 byte, got {value!r}")
    return size
