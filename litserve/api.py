"""``LitAPI``: the one class a user writes, and what litserve reads off it.

The hooks run inside a worker process, never in the app. The settings given to the constructor
(batching, streaming, concurrency) travel with the object to each worker, so the app and the workers
agree on them by construction.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import BaseModel

from .errors import ConfigurationError


class LitAPI:
    """Subclass this and implement ``setup`` and ``predict`` (and usually the two codecs).

    Args:
        max_batch_size: up to this many queued requests are given to ``predict`` at once, combined
            by ``batch`` and split again by ``unbatch``. 1 turns batching off.
        batch_timeout: seconds a batch waits, from its oldest request, for more requests to fill it.
        stream: ``predict`` and ``encode_response`` are generators; each chunk is sent as produced.
        max_concurrency: requests one worker runs at once when ``predict`` is ``async def``.
        spec: serve the API as a well-known interface instead of ``/predict``: ``ls.OpenAISpec()``
            (chat completions) or ``ls.OpenAIEmbeddingSpec()`` (embeddings); see help(litserve.OpenAISpec).
        mcp: a ``litserve.mcp.MCP(description=...)``: the API is also an MCP tool at ``/mcp/``.
        api_path: the path of this API's route (``POST``); each API of a server has its own.
        enable_async: accepted for LitServe; ``async def`` hooks are detected, so it changes nothing.
    """

    def __init__(
        self,
        *,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
        stream: bool = False,
        max_concurrency: int = 1,
        spec: Any = None,
        api_path: str = "/predict",
        enable_async: bool | None = None,
        mcp: Any = None,
    ) -> None:
        self.max_batch_size, self.batch_timeout, self.stream, self.max_concurrency = 1, 0.0, False, 1
        self.spec: Any = None
        self.api_path = "/predict"
        self.enable_async = enable_async
        self.mcp = mcp  # a litserve.mcp.MCP: also serve this API as an MCP tool at /mcp/
        self.configure(
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            stream=stream,
            max_concurrency=max_concurrency,
            spec=spec,
            api_path=api_path,
        )

    def configure(self, **settings: Any) -> None:
        """Set model settings, checked as the constructor checks them (server-level legacy settings land here)."""
        for name, value in settings.items():
            if name in ("max_batch_size", "max_concurrency"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
            elif name == "batch_timeout":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigurationError(f"batch_timeout must be a number >= 0, got {value!r}")
                value = float(value)
            elif name == "stream":
                value = bool(value)
            elif name == "api_path":
                if not isinstance(value, str) or not value.startswith("/"):
                    raise ConfigurationError(f"api_path must start with '/', got {value!r}")
            elif name != "spec":
                raise ConfigurationError(f"{name} is not a LitAPI setting")
            setattr(self, name, value)

    # -- hooks ---------------------------------------------------------------------------------------
    def setup(self, device: str) -> None:
        """Load the model onto ``device`` (``"cpu"``, ``"cuda:N"`` or ``"mps"``); runs once per worker."""

    def decode_request(self, request: Any) -> Any:
        """Turn the parsed JSON body (or the pydantic model it was validated into) into model input."""
        return request

    def batch(self, inputs: list[Any]) -> Any:
        """Combine decoded inputs into one model input: stacks tensors and arrays, else a list."""
        first = inputs[0]
        module = type(first).__module__.split(".")[0]
        if module == "torch":
            import torch

            return torch.stack(inputs)
        if module == "numpy":
            import numpy

            return numpy.stack(inputs)
        return list(inputs)

    def predict(self, x: Any) -> Any:
        """Run the model. A generator when ``stream=True``; may be ``async def``."""
        raise NotImplementedError("LitAPI.predict must be implemented")

    def unbatch(self, output: Any) -> list[Any]:
        """Split a batched output into one output per request, in request order."""
        return list(output)

    def encode_response(self, output: Any) -> Any:
        """Turn model output into a JSON-serialisable value or a pydantic model."""
        return output

    def health(self) -> bool:
        """Whether ``/health`` should answer ``ok``; runs in the server process (not a worker), so keep it fast."""
        return True

    def log(self, key: str, value: Any) -> None:
        """Send ``(key, value)`` to the server's ``ls.Logger``s (``LitServer(loggers=...)``); a no-op without any.

        Called from any hook in a worker; the entry travels as JSON to the server process, where the
        loggers' ``process(key, value)`` runs on a background thread.
        """
        sink = self.__dict__.get("_log_sink")
        if sink is not None:
            sink(key, value)

    # -- what litserve reads off the class -----------------------------------------------------------
    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.predict) or inspect.isasyncgenfunction(self.predict)

    def request_model(self) -> type[BaseModel] | None:
        """The pydantic model ``decode_request``'s parameter is annotated with, if any."""
        hints = _hints(self.decode_request)
        params = [p for p in inspect.signature(self.decode_request).parameters.values()]
        if not params:
            return None
        return _model_or_none(hints.get(params[0].name))

    def response_model(self) -> type[BaseModel] | None:
        """The pydantic model ``encode_response`` is annotated to return, if any."""
        return _model_or_none(_hints(self.encode_response).get("return"))

    def check(self) -> None:
        """Refuse, at app creation, combinations that cannot work, with a message saying why."""
        for name in ("max_batch_size", "batch_timeout", "stream", "max_concurrency"):
            if not hasattr(self, name):
                raise ConfigurationError(
                    f"{type(self).__name__}.__init__ must call super().__init__() (missing {name!r})"
                )
        if callable(getattr(self, "step", None)):  # continuous batching: join/step/leave instead of predict
            from .core.stepper import check_stepwise

            if not (self.stream and self.max_batch_size > 1):
                raise ConfigurationError("an API with step() needs stream=True and max_batch_size > 1")
            check_stepwise(self)
            return
        if type(self).predict is LitAPI.predict:
            raise ConfigurationError(f"{type(self).__name__} must implement predict()")
        gen = inspect.isgeneratorfunction(self.predict) or inspect.isasyncgenfunction(self.predict)
        if self.stream and not gen:
            raise ConfigurationError("stream=True needs predict() to be a generator (use yield)")
        if gen and not self.stream:
            raise ConfigurationError("predict() is a generator: pass stream=True to the LitAPI constructor")
        if self.max_concurrency > 1 and not self.is_async:
            raise ConfigurationError("max_concurrency > 1 needs an async predict (async def)")


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: behave as if unannotated
        return {}


def _model_or_none(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None
