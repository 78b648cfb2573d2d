"""The ``Callback`` base class and the runner that calls only the hooks a callback overrides."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum
from typing import Any

logger = logging.getLogger("litserve.callbacks")


class EventTypes(Enum):
    BEFORE_SETUP = "on_before_setup"
    AFTER_SETUP = "on_after_setup"
    BEFORE_DECODE_REQUEST = "on_before_decode_request"
    AFTER_DECODE_REQUEST = "on_after_decode_request"
    BEFORE_ENCODE_RESPONSE = "on_before_encode_response"
    AFTER_ENCODE_RESPONSE = "on_after_encode_response"
    BEFORE_PREDICT = "on_before_predict"
    AFTER_PREDICT = "on_after_predict"
    ON_SERVER_START = "on_server_start"
    ON_SERVER_END = "on_server_end"
    ON_REQUEST = "on_request"
    ON_RESPONSE = "on_response"


class Callback:
    """Subclass and override the hooks you need; each is called with keyword arguments."""

    def on_before_setup(self, *args: Any, **kwargs: Any) -> None:
        """In each worker, before ``LitAPI.setup``."""

    def on_after_setup(self, *args: Any, **kwargs: Any) -> None:
        """In each worker, after ``LitAPI.setup`` returned."""

    def on_before_decode_request(self, *args: Any, **kwargs: Any) -> None:
        """In the worker, before ``decode_request``."""

    def on_after_decode_request(self, *args: Any, **kwargs: Any) -> None:
        """In the worker, after ``decode_request``."""

    def on_before_encode_response(self, *args: Any, **kwargs: Any) -> None:
        """In the worker, before ``encode_response``."""

    def on_after_encode_response(self, *args: Any, **kwargs: Any) -> None:
        """In the worker, after ``encode_response``."""

    def on_before_predict(self, *args: Any, **kwargs: Any) -> None:
        """In the worker, before ``predict``."""

    def on_after_predict(self, *args: Any, **kwargs: Any) -> None:
        """In the worker, after ``predict`` (for a stream: after the generator is created)."""

    def on_server_start(self, *args: Any, **kwargs: Any) -> None:
        """In the server process, before the workers start."""

    def on_server_end(self, *args: Any, **kwargs: Any) -> None:
        """In the server process, after the workers stopped."""

    def on_request(self, *args: Any, **kwargs: Any) -> None:
        """In the server process, when a request reaches the model route."""

    def on_response(self, *args: Any, **kwargs: Any) -> None:
        """In the server process, when a response is ready to be sent."""


class NoopCallback(Callback):
    """A callback that does nothing."""


class CallbackRunner:
    """Calls each event's hooks on every callback that overrides it, in the order given.

    Which callbacks override which hook is worked out once, so an event nobody listens to costs a
    dict lookup, and ``bool(runner)`` is False when there is nothing to call at all.
    """

    def __init__(self, callbacks: Callback | Iterable[Callback] | None = None) -> None:
        self._callbacks: list[Callback] = []
        self._by_event: dict[str, list[Any]] = {}
        if callbacks is not None:
            self._add_callbacks(callbacks)

    def _add_callbacks(self, callbacks: Callback | Iterable[Callback]) -> None:
        items = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
        for cb in items:
            if not isinstance(cb, Callback):
                raise ValueError(f"callbacks must be ls.Callback instances, got {type(cb).__name__}")
        self._callbacks.extend(items)
        self._by_event = {}
        for event in EventTypes:
            name = event.value
            base = getattr(Callback, name)
            hooks = [cb for cb in self._callbacks if getattr(type(cb), name, base) is not base]
            if hooks:
                self._by_event[name] = hooks

    @property
    def callbacks(self) -> list[Callback]:
        return list(self._callbacks)

    def __bool__(self) -> bool:
        return bool(self._by_event)

    def listens(self, event: EventTypes | str) -> bool:
        return (event.value if isinstance(event, EventTypes) else event) in self._by_event

    def trigger_event(self, event_name: EventTypes | str, *args: Any, **kwargs: Any) -> None:
        """Call ``event_name`` on each callback that overrides it; log (never raise) what they raise."""
        name = event_name.value if isinstance(event_name, EventTypes) else event_name
        for cb in self._by_event.get(name, ()):
            try:
                getattr(cb, name)(*args, **kwargs)
            except Exception:
                logger.exception("callback %s raised in %s", type(cb).__name__, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"callbacks": self._callbacks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["callbacks"])  # type: ignore[misc]
