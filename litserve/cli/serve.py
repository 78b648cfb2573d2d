"""``litserve serve module:attr``: serve a LitAPI, a LitServer or an app with uvicorn, draining on SIGTERM.

The target is found like uvicorn finds one (``module:attr``, the current directory first on the
path), and may be:

- a ``LitAPI`` instance (or a ``LitAPI`` subclass taking no arguments): the settings flags
  (``--workers``, ``--timeout``, ...) build the app;
- a ``LitServer`` or a ``create_app`` app: served as built; settings flags are refused, since the
  object already holds its settings (a silently ignored ``--timeout`` is worse than an error);
- any other ASGI app (a FastAPI host that mounts a litserve app): served as built.

Given only ``module``, the one LitServer, app or LitAPI defined at its top level is served.
The drain on SIGTERM lives in the app (``core/drain.py``), so it is the same here as under
``uvicorn``, gunicorn or ``LitServer.run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from .. import checks
from ..api import LitAPI
from ..config import Settings
from ..core.app import LitApp, create_app
from ..core.runner import run_uvicorn
from ..errors import ConfigurationError, LitServeError
from ..server import LitServer

USAGE_ERROR = 2  # argparse's status for a bad command line


class TargetError(Exception):
    """The target could not be imported or is not something we can serve."""


def _devices(value: str) -> int | list[int] | str:
    if value == "auto":
        return value
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return int(value)


def _timeout(value: str) -> float | None:
    return None if value.lower() in ("none", "off", "false") else float(value)


def _size_or_none(value: str) -> str | None:
    return None if value.lower() in ("none", "off", "false") else value


# (flag, create_app keyword, type, help); defaults are read from Settings, so --help never lies.
SETTINGS_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--accelerator", "accelerator", str, "auto, cpu, cuda (or gpu), mps"),
    ("--devices", "devices", _devices, "auto, a count, or device ids as 0,1,3"),
    ("--workers", "workers_per_device", int, "model worker processes per device (not HTTP processes)"),
    ("--timeout", "timeout", _timeout, "seconds per request before 504; 'none' waits forever"),
    ("--api-path", "api_path", str, "path of the model route (POST)"),
    ("--max-queue-size", "max_queue_size", int, "requests that may wait for a worker before 503"),
    ("--max-payload-size", "max_payload_size", str, "largest request body, e.g. 10MB, before 413"),
    (
        "--stream-buffer",
        "stream_buffer",
        _size_or_none,
        "bytes of a stream held for a slow client before its worker pauses, e.g. 1MiB; 'none' never pauses",
    ),
    ("--startup-timeout", "startup_timeout", float, "seconds a worker's setup may take"),
    ("--shutdown-grace", "shutdown_grace", float, "seconds in-flight requests get on SIGTERM"),
    ("--header-timeout", "header_timeout", _timeout, "seconds to send complete request headers before 408; 'none'"),
    (
        "--body-timeout",
        "body_timeout",
        _timeout,
        "seconds for a body to arrive before 408 (default: --timeout)",
    ),
    (
        "--max-connections",
        "max_connections",
        int,
        "open connections kept; idle ones are closed first at the cap (default: no limit)",
    ),
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="serve module:attr (a LitAPI, a LitServer or an app) with uvicorn; drains on SIGTERM",
        description=(
            "Serve module:attr with uvicorn. On SIGTERM /ready and the model route answer 503 at once, "
            "requests in flight get --shutdown-grace seconds, then the server stops. The API key is read "
            "from $LIT_SERVER_API_KEY (never a flag: command lines are visible to every user)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("target", metavar="module:attr", help="e.g. server:api, server:server, server:app, or server")
    p.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}
    defaults["api_path"] = "/predict"  # a model setting: set on the LitAPI (LitAPI(api_path=...))
    group = p.add_argument_group("settings (for a LitAPI target; see docs/settings.md)")
    for flag, name, kind, text in SETTINGS_FLAGS:
        default = defaults.get(name)
        metavar = flag[2:].upper().replace("-", "_")
        shown = text if "(default:" in text else f"{text} (default: {default})"  # body_timeout names its own
        group.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, metavar=metavar, help=shown)
    http = p.add_argument_group("uvicorn")
    http.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    # SUPPRESS: the defaults formatter would print store_false's "(default: True)" beside a flag that turns logging off.
    http.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        default=argparse.SUPPRESS,
        help="do not log each request",
    )
    http.add_argument("--timeout-keep-alive", type=int, default=5, help="seconds an idle connection stays open")
    http.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies whose X-Forwarded-For/-Proto are trusted (uvicorn's flag; behind an ingress: '*')",
    )
    p.add_argument("--app-dir", default=".", help="directory put first on the import path")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = {name: getattr(args, name) for _, name, _, _ in SETTINGS_FLAGS if hasattr(args, name)}
    try:
        app = load_app(args.target, settings, app_dir=args.app_dir)
    except TargetError as exc:
        sys.stderr.write(f"litserve serve: {exc}\n")
        return USAGE_ERROR
    except ConfigurationError as exc:
        sys.stderr.write(f"litserve serve: {_name_the_flag(str(exc), settings)}\n")
        return USAGE_ERROR
    if isinstance(app, LitApp):
        app.set_log_level(args.log_level)  # the workers log at the server's level, as under LitServer.run
    options: dict[str, Any] = {
        "access_log": getattr(args, "access_log", True),
        "timeout_keep_alive": args.timeout_keep_alive,
    }
    if args.forwarded_allow_ips is not None:
        options["forwarded_allow_ips"] = args.forwarded_allow_ips
    try:
        sock = checks.bind_port(args.host, args.port, other_port="pass another --port")
    except checks.PortInUse as exc:
        sys.stderr.write(f"litserve serve: {exc}\n")
        return 1
    try:
        return run_uvicorn(app, args.host, args.port, log_level=args.log_level, sock=sock, **options)
    except LitServeError as exc:  # e.g. the port is taken
        sys.stderr.write(f"litserve serve: {exc}\n")
        return 1


def _name_the_flag(message: str, given: dict[str, Any]) -> str:
    """A settings error names the setting (``timeout must be ...``); on the command line, name its flag too."""
    for flag, name, _, _ in SETTINGS_FLAGS:
        if name in given and (message.startswith(f"{name} ") or message.startswith(f"{name}=")):
            return f"{flag}: {message}"
    return message


def load_app(target: str, settings: dict[str, Any], *, app_dir: str = ".") -> Any:
    """The ASGI app to serve for ``target``; ``settings`` apply to a LitAPI target only."""
    obj, where = _import(target, app_dir)
    if isinstance(obj, type) and issubclass(obj, LitAPI):
        try:
            obj = obj()
        except TypeError as exc:
            raise TargetError(f"{where} is a LitAPI class that needs arguments ({exc}); point at an instance") from None
    if isinstance(obj, LitAPI):
        if "api_path" in settings:
            obj.configure(api_path=settings.pop("api_path"))
        return create_app(obj, **settings)
    if settings:
        flags = ", ".join(f for f, name, _, _ in SETTINGS_FLAGS if name in settings)
        raise TargetError(
            f"{where} is a {type(obj).__name__} that already holds its settings; {flags} would be ignored. "
            "Set them where it is built, or point litserve serve at the LitAPI instead."
        )
    if isinstance(obj, LitServer):
        return obj.app
    if isinstance(obj, LitApp) or callable(obj):
        return obj
    raise TargetError(f"{where} is a {type(obj).__name__}, not a LitAPI, a LitServer or an ASGI app")


def _import(target: str, app_dir: str) -> tuple[Any, str]:
    module_name, _, attr = target.partition(":")
    if module_name.endswith(".py"):  # server.py -> server, as a user naturally types it
        path = Path(module_name)
        app_dir = str(Path(app_dir) / path.parent)
        module_name = path.stem
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # spawned workers inherit the path, and import the module from here too
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise TargetError(f"no module named {module_name!r} (looked in {directory} and the import path)") from None
        raise
    if not attr:
        return _only_candidate(module)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj, f"{module_name}:{attr}"


def _only_candidate(module: Any) -> tuple[Any, str]:
    """The single LitServer, else app, else LitAPI instance at the module's top level."""
    for kind in (LitServer, LitApp, LitAPI):
        found = [(name, value) for name, value in vars(module).items() if isinstance(value, kind)]
        if len(found) == 1:
            name, value = found[0]
            return value, f"{module.__name__}:{name}"
        if len(found) > 1:
            names = ", ".join(f"{module.__name__}:{name}" for name, _ in found)
            raise TargetError(f"module {module.__name__!r} has several {kind.__name__}s; name one: {names}")
    # A server file (the quickstart's) often defines only its LitAPI class: a class target works, so name it.
    classes = [
        f"{module.__name__}:{name}"
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, LitAPI) and value.__module__ == module.__name__
    ]
    hint = f"; its LitAPI classes serve too: {', '.join(classes)}" if classes else ""
    raise TargetError(
        f"module {module.__name__!r} defines no LitServer, app or LitAPI instance at its top level; "
        f"name the object as {module.__name__}:attr{hint}"
    )
