"""The server's settings: checked once, when the app is created, so a typo fails at start, not at 3 a.m.

``Settings`` is the one place that says what each server-wide setting means, its default, and what
values it accepts; ``Settings.build(**kwargs)`` checks and normalises what a user passed, and the
result is handed down (app, handler, pool) as one frozen object. ``SettingsArgs`` spells the same
names with the types a user may pass (``"10MB"``, ``False``, ``"debug"``), so editors and mypy see
every keyword of ``create_app`` and ``LitServer``; a test keeps the two in step.

Model settings (batching, streaming, concurrency, route) live on the ``LitAPI`` instead, because the
workers need them too and each API of a server has its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .api import LitAPI

API_KEY_ENV = "LIT_SERVER_API_KEY"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


class SettingsArgs(TypedDict, total=False):
    """The keyword arguments of ``create_app`` and ``LitServer``, as a user may write them."""

    accelerator: str
    devices: int | Sequence[int] | str
    workers_per_device: int | Mapping[str, int]
    timeout: float | bool | None
    max_queue_size: int
    max_payload_size: int | str
    stream_buffer: int | str | bool | None
    startup_timeout: float
    shutdown_grace: float
    api_key: str | None
    log_level: int | str
    healthcheck_path: str
    info_path: str
    model_metadata: Any
    middlewares: Sequence[Any] | None
    callbacks: Any
    loggers: Any
    hung_grace: float | bool | None
    heartbeat_timeout: float | bool | None
    header_timeout: float | None
    body_timeout: float | None
    keep_alive_timeout: float | None
    max_connections: int | None
    restart_workers: bool
    track_requests: bool


class ServerArgs(SettingsArgs, total=False):
    """``SettingsArgs`` plus the model settings LitServe once took on the server (forwarded to the API)."""

    api_path: str
    stream: bool
    max_batch_size: int
    batch_timeout: float
    spec: Any


LEGACY_MODEL_SETTINGS = ("api_path", "stream", "max_batch_size", "batch_timeout", "spec")


@dataclass(frozen=True)
class Settings:
    """What ``create_app(api, **settings)`` and ``LitServer(api, **settings)`` accept, checked once.

    Attributes:
        accelerator: ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"gpu"``), ``"mps"``.
        devices: ``"auto"`` (every visible device), a count, or a list of device ids.
        workers_per_device: worker processes per device, each with its own copy of the model; an
            int for every API, or a dict ``{api_path: int}`` (an API it does not name gets 1).
        timeout: seconds from a request's arrival to its response (to each chunk, when streaming);
            past it the client gets 504. ``None`` (or ``False`` when given) waits forever.
        max_queue_size: requests that may wait for a worker; beyond it, 503 with Retry-After.
        max_payload_size: largest request body in bytes (given as an int or as ``"10MB"``); beyond it, 413.
        stream_buffer: bytes of a stream's chunks the server holds for a client that reads slower than
            the model produces (an int or ``"1MiB"``); past it the worker pauses that stream until half
            is sent, so a slow client costs bounded memory, never the whole stream. ``None`` (or ``False``):
            unbounded.
            A stream that shares its worker's generator with others (batched, continuous batching)
            is never paused.
        startup_timeout: seconds a worker's ``setup`` may take before it counts as failed.
        shutdown_grace: seconds in-flight requests get to finish when the server stops.
        api_key: the key clients must send in ``X-API-Key``; by default ``$LIT_SERVER_API_KEY``
            read when the app is created. ``""`` turns authentication off.
        log_level: the workers' log level (a ``logging`` level or its name); ``LitServer.run(log_level=)``
            sets it too.
        healthcheck_path: the path of the liveness probe (``GET``).
        info_path: the path of the server's description (``GET``, needs the key when one is set).
        model_metadata: any JSON-serialisable value, shown by ``info_path`` as ``model``.
        middlewares: ASGI middleware classes, or ``(cls, kwargs)`` tuples, wrapped around the app in order.
        callbacks: ``ls.Callback`` instances (one or a list) called at LitServe's hook points.
        loggers: ``ls.Logger`` instances (one or a list) receiving ``LitAPI.log(key, value)``.
        restart_workers: accepted for LitServe; a worker that dies is always replaced (``False`` warns).
        track_requests: accepted for LitServe; requests in flight are always counted (``/metrics``).
        hung_grace: seconds a request may keep its worker busy after its ``timeout`` passed; then the
            worker counts as hung and is killed and replaced (its model is loaded again). ``None``
            (or ``False``) never does; without a ``timeout`` it never applies either.
        heartbeat_timeout: seconds a busy worker may go without a heartbeat (sent from a thread of
            its own every second, or every quarter of this if shorter) before it is killed and
            replaced: a stopped process, or a call that holds the GIL and never returns. ``None``
            (or ``False``) turns it off.
        header_timeout: seconds a connection has to send a request's complete headers, counted from
            its start or, on a kept-alive connection, from the request's first byte; past it, 408 and
            the connection closes. ``None`` turns it off.
        body_timeout: seconds from the end of the headers for the whole body to arrive; past it, 408,
            the connection closes and the request's slot is freed. ``None``: the request's ``timeout``
            (and no limit when that is ``None`` too).
        keep_alive_timeout: seconds an idle keep-alive connection stays open between requests; ``None``:
            the HTTP server's own (uvicorn's ``timeout_keep_alive``, 5 s unless set there).
        max_connections: open HTTP connections allowed; at the cap the oldest idle one is closed to
            make room, or the new one gets 503 when none is idle. ``None``: below the open-file limit,
            which the server raises to its hard limit at start.
    """

    accelerator: str = "auto"
    devices: int | Sequence[int] | str = "auto"
    workers_per_device: int | Mapping[str, int] = 1
    timeout: float | None = 30.0
    max_queue_size: int = 1024
    max_payload_size: int = 100 * 10**6
    stream_buffer: int | None = 2**20
    startup_timeout: float = 600.0
    shutdown_grace: float = 30.0
    api_key: str | None = None
    log_level: int = logging.INFO
    healthcheck_path: str = "/health"
    info_path: str = "/info"
    model_metadata: Any = None
    middlewares: tuple[Any, ...] = ()
    callbacks: tuple[Any, ...] = ()
    loggers: tuple[Any, ...] = ()
    hung_grace: float | None = 30.0
    heartbeat_timeout: float | None = 30.0
    restart_workers: bool = True
    track_requests: bool = False
    header_timeout: float | None = 5.0
    body_timeout: float | None = None
    keep_alive_timeout: float | None = None
    max_connections: int | None = None

    @property
    def body_deadline(self) -> float | None:
        """Seconds a body may take to arrive: ``body_timeout``, else the request's ``timeout``."""
        return self.body_timeout if self.body_timeout is not None else self.timeout

    @classmethod
    def build(cls, **given: Any) -> Settings:
        """Check and normalise ``given`` (a ``SettingsArgs``); raise ConfigurationError naming the bad one."""
        unknown = sorted(set(given) - _FIELDS)
        if unknown:
            raise ConfigurationError(f"unknown setting(s) {', '.join(unknown)}; see help(litserve.Settings)")
        values = {name: _CHECKS[name](name, value) for name, value in given.items()}
        if given.get("api_key") is None:  # not given: the environment's; "" turns authentication off
            values["api_key"] = os.environ.get(API_KEY_ENV) or None
        return cls(**values)

    def replace(self, **given: Any) -> Settings:
        """A copy with ``given`` checked and changed (``LitServer.run(log_level=)`` uses it)."""
        return dataclasses.replace(self, **{name: _CHECKS[name](name, value) for name, value in given.items()})

    def public(self) -> dict[str, Any]:
        """The settings as ``/info`` shows them: everything but the key."""
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "api_key"}
        shown["log_level"] = logging.getLevelName(self.log_level)
        for name in ("middlewares", "callbacks", "loggers"):
            shown[name] = [_class_name(item) for item in shown[name]]
        shown["workers_per_device"] = self.workers_per_device
        return shown

    def workers_for(self, api_path: str) -> int:
        """Worker processes per device for the API at ``api_path``."""
        if isinstance(self.workers_per_device, int):
            return self.workers_per_device
        return self.workers_per_device.get(api_path, 1)


def forward_model_settings(apis: Sequence[LitAPI], given: dict[str, Any]) -> dict[str, Any]:
    """Move LitServe's old per-server model settings onto the API, with LitServe's DeprecationWarning.

    Returns ``given`` without them. With several APIs they are refused: each API has its own.
    """
    legacy = {name: given.pop(name) for name in LEGACY_MODEL_SETTINGS if name in given}
    legacy = {name: value for name, value in legacy.items() if value is not None}
    if legacy.get("stream") is False:
        del legacy["stream"]  # the default, as LitServe passes it
    if not legacy:
        return given
    if len(apis) != 1:
        names = ", ".join(sorted(legacy))
        raise ConfigurationError(f"{names}: with several APIs, pass them to each LitAPI(...), not to the server")
    [api] = apis
    for name, value in legacy.items():
        warnings.warn(
            f"{name}= on the server is deprecated (as in LitServe); pass it to the API: LitAPI({name}=...)",
            DeprecationWarning,
            stacklevel=4,
        )
        api.configure(**{name: value})
    return given


def _class_name(item: Any) -> str:
    item = item[0] if isinstance(item, tuple) and item else item
    return getattr(item, "__name__", None) or type(item).__name__


def _number(name: str, value: Any, *, low: float, strict: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value)
    if bad or value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ConfigurationError(f"{name} must be a number of seconds {bound}, got {value!r}")
    return float(value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _timeout(name: str, value: Any) -> float | None:
    if value is None or value is False:
        return None
    try:
        return _number(name, value, low=0, strict=True)
    except ConfigurationError:
        raise ConfigurationError(f"timeout must be a number of seconds > 0, or None/False, got {value!r}") from None


def _optional_seconds(name: str, value: Any) -> float | None:
    if value is None or value is False:
        return None
    try:
        return _number(name, value, low=0, strict=True)
    except ConfigurationError:
        raise ConfigurationError(f"{name} must be a number of seconds > 0, or None/False, got {value!r}") from None


def _optional_count(name: str, value: Any) -> int | None:
    return None if value is None else _count(name, value)


def _path(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigurationError(f"{name} must start with '/', got {value!r}")
    return value


def _api_key(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError("api_key must be a string")
    return value or None


def _log_level(name: str, value: Any) -> int:
    if isinstance(value, str) and isinstance(logging.getLevelName(value.upper()), int):
        return int(logging.getLevelName(value.upper()))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigurationError(f"log_level must be a logging level or its name ('info', 'debug', ...), got {value!r}")


def _objects(name: str, value: Any) -> tuple[Any, ...]:
    """A list (or one object) of middlewares, callbacks or loggers as a tuple; each is checked where used."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)) and not (name == "middlewares" and _is_pair(value)):
        return tuple(value)
    if name == "middlewares":
        raise ConfigurationError(
            "middlewares must be a list of middleware classes or (class, kwargs) tuples, e.g. "
            "middlewares=[GZipMiddleware, (CORSMiddleware, {'allow_origins': ['*']})]"
        )
    return (value,)


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict)


def _as_is(name: str, value: Any) -> Any:
    return value  # checked where it is resolved (devices.resolve_devices), with the other device settings


def _workers(name: str, value: Any) -> int | dict[str, int]:
    if isinstance(value, Mapping):
        out = {}
        for path, count in value.items():
            _path(f"{name} key", path)
            out[path] = _count(f"{name}[{path!r}]", count)
        return out
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1 or a dict {{api_path: int}}, got {value!r}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    if name == "restart_workers" and not value:
        warnings.warn(
            "restart_workers=False is ignored: litserve always replaces a worker that dies", UserWarning, stacklevel=4
        )
    return value


def _metadata(name: str, value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be JSON serialisable, got a {type(value).__name__}") from None
    return value


def parse_size(value: int | str, name: str = "max_payload_size") -> int:
    """Bytes from an int or a string like ``"10MB"`` (decimal) or ``"10MiB"`` (binary)."""
    size = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        number, prefix, binary = m.groups()
        size = int(float(number) * (1024 if binary else 1000) ** _POWERS[prefix.lower()])
    if size is None:
        raise ConfigurationError(f"{name} must be bytes or a size like '10MB', got {value!r}")
    if size < 1:
        raise ConfigurationError(f"{name} must be at least 1 byte, got {value!r}")
    return size


_CHECKS = {
    "accelerator": _as_is,
    "devices": _as_is,
    "workers_per_device": _workers,
    "timeout": _timeout,
    "max_queue_size": _count,
    "max_payload_size": lambda name, value: parse_size(value, name),
    "stream_buffer": lambda name, value: None if value is None or value is False else parse_size(value, name),
    "startup_timeout": lambda name, value: _number(name, value, low=0),
    "shutdown_grace": lambda name, value: _number(name, value, low=0),
    "api_key": _api_key,
    "log_level": _log_level,
    "healthcheck_path": _path,
    "info_path": _path,
    "model_metadata": _metadata,
    "middlewares": _objects,
    "callbacks": _objects,
    "loggers": _objects,
    "hung_grace": _optional_seconds,
    "heartbeat_timeout": _optional_seconds,
    "header_timeout": _optional_seconds,
    "body_timeout": _optional_seconds,
    "keep_alive_timeout": _optional_seconds,
    "max_connections": _optional_count,
    "restart_workers": _flag,
    "track_requests": _flag,
}
_FIELDS = frozenset(_CHECKS)
assert _FIELDS == {f.name for f in dataclasses.fields(Settings)}, "every setting has exactly one check"
