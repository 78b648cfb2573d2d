"""What the worker adds around the user's hooks for LitServe's features, decided once at start.

- ``context``: a hook whose signature names ``context`` gets the request's context dict (one dict
  per request, shared by its ``decode_request``, ``predict`` and ``encode_response``; a batched
  ``predict`` gets the list of the batch's dicts). Signatures are read once, here.
- callbacks: the ``ls.Callback`` hooks that run in the worker (setup, and before/after each stage).
- ``LitAPI.log``: a sink that sends each entry to the app as a LOG frame.
- (a Starlette/FastAPI ``Response`` returned by ``encode_response`` is core/responses.py's.)
- a form body (its Content-Type follows the request id in the REQUEST tag): parsed to ``FormData``.

The app attaches the server's callbacks and whether it has loggers to the API object
(``attach``) before the workers are spawned, so they travel with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..callbacks import Callback, CallbackRunner
from ..loggers import encode_entry
from . import protocol as P
from .forms import parse_form

_EXTRAS = "_litserve_extras"


@dataclass
class Extras:
    """The server-wide features a worker needs to know about, carried on the API object."""

    callbacks: tuple[Callback, ...] = ()
    log: bool = False


def attach(api: Any, callbacks: tuple[Callback, ...] | list[Callback], log: bool) -> None:
    """Record on ``api`` (before the workers are spawned) the callbacks and whether loggers listen."""
    if callbacks or log:
        api.__dict__[_EXTRAS] = Extras(tuple(callbacks), log)
    else:
        api.__dict__.pop(_EXTRAS, None)


def extras(api: Any) -> Extras:
    return api.__dict__.get(_EXTRAS) or Extras()


def callback_runner(api: Any) -> CallbackRunner | None:
    """The runner for the worker-side callbacks, or None when no callback has a worker-side hook."""
    runner = CallbackRunner(extras(api).callbacks)
    return runner if runner else None


def install_log_sink(api: Any, send: Callable[[list[bytes]], Any]) -> None:
    """Make ``api.log(key, value)`` send a LOG frame with ``send`` (the worker's socket), if loggers listen."""
    if extras(api).log:

        def sink(key: str, value: Any) -> None:
            send(P.encode(P.LOG, [(0, 0, encode_entry(key, value))]))

        api.__dict__["_log_sink"] = sink


def takes_context(fn: Callable[..., Any]) -> bool:
    try:
        return "context" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def with_context(fn: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """``fn`` as a step taking ``(x, context)``: the context is passed only if ``fn`` names it."""
    if takes_context(fn):
        return lambda x, context: fn(x, context=context)
    return lambda x, context: fn(x)


def context_steps(api: Any) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]] | None:
    """(decode, predict, encode) steps taking a context, or None when no hook names ``context``."""
    hooks = (api.decode_request, api.predict, api.encode_response)
    if not any(takes_context(fn) for fn in hooks):
        return None
    return with_context(hooks[0]), with_context(hooks[1]), with_context(hooks[2])


def form_body(it: P.Item) -> Any:
    """The form a REQUEST item carries (its tag is ``request-id \\n content-type``)."""
    return parse_form(it.payload, it.tag.partition(b"\n")[2])
