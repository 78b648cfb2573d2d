"""Checks run before anything starts, so a day-one mistake fails in one line that names its fix.

- the ``LitAPI`` instance must reach spawned workers: its class importable, its attributes picklable;
- hook names one letter off (``set_up``, ``decode_requests``) are never called: warn, naming the hook;
- the port must be free before the model loads, not after;
- a script must start the server under ``if __name__ == "__main__":`` (workers import it again);
- Lightning's LitServe installed beside this project shares its import name: warn.
"""

from __future__ import annotations

import ast
import difflib
import errno
import functools
import inspect
import linecache
import logging
import os
import pickle
import socket
import sys
from collections.abc import Mapping

from starlette.datastructures import FormData

from .api import LitAPI
from .errors import ConfigurationError, ValidationFailed

logger = logging.getLogger("litserve")

HOOKS = ("setup", "decode_request", "batch", "predict", "unbatch", "encode_response")


class PortInUse(ConfigurationError):
    """The port ``LitServer.run`` was given cannot be bound."""


def check_api(api: LitAPI) -> None:
    """Raise ConfigurationError when ``api`` cannot be sent to a worker; warn about misspelled hooks."""
    cls = type(api)
    name = cls.__name__
    if cls.__module__ == "__main__" and not _main_is_a_file():
        raise ConfigurationError(
            f"{name} is defined in an interactive session (a REPL, a notebook or python -c): the workers are "
            f"separate processes that import {name}, so it must live in an importable file; move it to a module "
            f"(e.g. my_api.py) and `from my_api import {name}`"
        )
    if "<locals>" in cls.__qualname__:
        raise ConfigurationError(
            f"{name} is defined inside a function: the workers import it, so define it at module level"
        )
    try:
        pickle.dumps(api)
    except Exception as exc:
        raise ConfigurationError(_unpicklable(api, exc)) from None
    for warning in misspelled_hooks(cls):
        logger.warning("%s", warning)
    clash = other_litserve()
    if clash:
        logger.warning("%s", clash)


class MissingMainGuard(ConfigurationError):
    """``LitServer.run`` called from a script's top level, outside ``if __name__ == "__main__":``."""


def check_main_guard() -> None:
    """Raise MissingMainGuard when the script being run reaches ``LitServer.run`` outside the guard.

    Workers are spawned: each imports the script again (as ``__mp_main__``), and a ``run()`` reached
    from its top level would start a server in every worker too. multiprocessing refuses that with its
    "bootstrapping phase" error, after a long traceback from each process; caught here instead, before
    anything starts, in one line. Only the file the workers import again is judged: the main module's
    file (not a launcher that ran it, nor a notebook, ``python -c`` or code without a file).
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file:
        return
    main_file = os.path.realpath(main_file)
    frame = sys._getframe(1)
    while frame is not None:
        path, line = frame.f_code.co_filename, frame.f_lineno
        if frame.f_code.co_name == "<module>" and os.path.realpath(path) == main_file:
            if _unguarded(path, line):
                name = path.rsplit("/", 1)[-1]
                raise MissingMainGuard(
                    f"{name}:{line} starts the server at the top level of the script: the workers are spawned "
                    f'processes that import {name} again, so start it under `if __name__ == "__main__":`'
                )
        frame = frame.f_back  # type: ignore[assignment]


def _unguarded(path: str, line: int) -> bool:
    """Whether ``line`` of the file at ``path`` lies outside every ``if`` that tests ``__name__``."""
    source = "".join(linecache.getlines(path))
    if not source:
        return False
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and node.lineno <= line <= (node.end_lineno or node.lineno):
            if any(isinstance(n, ast.Name) and n.id == "__name__" for n in ast.walk(node.test)):
                return False
    return True


def _main_is_a_file() -> bool:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return bool(path) and not str(path).startswith("<")


def _unpicklable(api: LitAPI, exc: Exception) -> str:
    name = type(api).__name__
    for attr, value in vars(api).items():
        try:
            pickle.dumps(value)
        except Exception:
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            return (
                f"{name}.{attr} (a {kind}) cannot be sent to the worker processes: "
                f"create it in setup(), not in __init__"
            )
    reason = f"{type(exc).__name__}: {exc}"
    return f"{name} cannot be sent to the worker processes ({reason}); create such objects in setup()"


def misspelled_hooks(cls: type) -> list[str]:
    """A warning for each method of ``cls`` whose name is one slip away from a hook's."""
    warnings = []
    known = set(dir(LitAPI))
    for attr, _value in inspect.getmembers(cls, callable):
        if attr.startswith("_") or attr in known:
            continue
        hook = _near_hook(attr)
        if hook is not None:
            warnings.append(
                f"{cls.__name__}.{attr} is never called by litserve: did you mean {hook}()? "
                f"Rename it to override LitAPI.{hook}."
            )
    return warnings


def _near_hook(attr: str) -> str | None:
    squashed = attr.replace("_", "").lower()
    for hook in HOOKS:
        target = hook.replace("_", "")
        if squashed in (target, target + "s") or squashed.rstrip("s") == target:
            return hook
    close = difflib.get_close_matches(attr, HOOKS, n=1, cutoff=0.9)
    return close[0] if close else None


def missing_field(exc: Exception, request: object) -> Exception:
    """A 422 naming the field when ``decode_request`` itself indexed the request with a key it lacks.

    Only a ``request[...]`` lookup in ``decode_request``'s own frame counts: a KeyError from deeper
    code (a tokenizer's vocabulary, a dict of the user's) stays the 500 that it is.
    """
    if not isinstance(exc, KeyError) or not isinstance(request, Mapping) or len(exc.args) != 1:
        return exc
    key = exc.args[0]
    body: Mapping[object, object] = request
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    if frames and frames[-1].f_code.co_name == "__getitem__" and frames[-1].f_locals.get("self") is body:
        frames.pop()  # a form body (FormData) raises from its own __getitem__; a dict from no frame at all
    if not frames or frames[-1].f_code.co_name != "decode_request" or key in body:
        return exc
    try:
        hash(key)
    except TypeError:
        return exc
    msg = f"Field required: decode_request reads request[{key!r}], which this body does not have"
    if _json_sent_as_a_form(body):
        msg += (
            "; the body came as a form (Content-Type: application/x-www-form-urlencoded, what curl -d sends "
            "unless told otherwise) whose field name is JSON: send JSON with Content-Type: application/json "
            "(curl -H 'Content-Type: application/json', or curl --json)"
        )
    return ValidationFailed(
        [{"loc": ["body", key if isinstance(key, (str, int)) else repr(key)], "msg": msg, "type": "missing"}]
    )


def _json_sent_as_a_form(body: Mapping[object, object]) -> bool:
    """JSON posted with a form's Content-Type (``curl -d '{...}'``): the first field's name starts as JSON does."""
    if not isinstance(body, FormData) or not body:
        return False
    name = next(iter(body))
    return isinstance(name, str) and name.lstrip()[:1] in ("{", "[")


def port_number(port: object) -> int:
    """``port`` as an int; PortInUse (one line) when it is no port.

    A string of digits is taken, as LitServe takes it: ``run(port=os.environ.get("PORT", 8000))``.
    """
    number = None
    if isinstance(port, (int, str)) and not isinstance(port, bool):
        try:
            number = int(port)
        except ValueError:
            pass
    if number is None or not 0 <= number <= 65535:
        raise PortInUse(f"cannot listen on port {port!r}: a port is a number from 0 to 65535")
    return number


def bind_port(host: str, port: int, *, other_port: str = "pass another port to run(port=...)") -> socket.socket:
    """A listening-ready socket bound to ``host:port``; PortInUse (one line, naming the port) if it can't be.

    ``other_port`` says how the caller's user picks another port (``litserve serve``: its ``--port``).
    """
    port = port_number(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} is already in use on {host or '0.0.0.0'}: stop the process holding it, or {other_port}"
            ) from None
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


@functools.lru_cache(maxsize=1)
def other_litserve() -> str | None:
    """A warning when Lightning's ``litserve`` distribution is installed in this environment too."""
    from importlib import metadata

    try:
        other = metadata.distribution("litserve")
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # a broken metadata directory is not our business
        return None
    return (
        f"the pip package 'litserve' {other.version} (Lightning's LitServe, or this project installed under its "
        "old name) is installed beside this project ('litserve-zmq'): both install the 'litserve' package and "
        "overwrite each other's files; pip uninstall litserve, then reinstall litserve-zmq"
    )
