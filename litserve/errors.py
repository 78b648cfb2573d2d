"""Exceptions a user of litserve can see, and the one table that turns them into HTTP statuses.

::

    LitServeError
    ├── ConfigurationError          bad settings given to create_app / LitServer (raised at once)
    ├── WorkerStartupError          a worker's setup() raised, or did not finish before startup_timeout
    └── RequestError                a request ended without a model result; carries .status and .detail
        ├── BadRequest              400  the body is not valid JSON
        ├── Unauthorized            401  missing or wrong X-API-Key
        ├── PayloadTooLarge         413  body over max_payload_size
        ├── UnsupportedMediaType    415  a form posted to an API whose decode_request takes a JSON model
        ├── ValidationFailed        422  the body does not match the pydantic model (names the field)
        ├── ServiceUnavailable      503  queue full, draining, or no worker can serve (has Retry-After)
        │   └── WorkerDied          503  the worker streaming the request exited (a stream is not retried)
        ├── PoisonRequest           500  two workers exited running this request (or its body did that before)
        ├── RequestTimeout          504  the request's timeout passed before its response
        └── ClientDisconnected      499  the client left; nothing is sent (the status is for logs/metrics)

Every error body is shaped as FastAPI shapes it, so clients written for FastAPI or LitServe read it
unchanged: ``{"detail": "<message>"}``, and for 422 ``{"detail": [{"loc": ["body", "input"], "msg": ...,
"type": ...}, ...]}``. This module is the one place that builds them (``error_body``,
``validation_failed``, ``user_exception_reply``). The request id is in the ``X-Request-ID`` header.

User code raising ``starlette.exceptions.HTTPException`` (or FastAPI's subclass) keeps its status,
detail and headers; any other exception in user code becomes 500 with ``{"detail": "<Type>: <message>"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pydantic_core

from .core.protocol import MAX_TAG_BYTES  # extra headers travel in a reply's item tag

if TYPE_CHECKING:
    from pydantic import ValidationError


class LitServeError(Exception):
    """Base of every litserve exception."""


class ConfigurationError(LitServeError, ValueError):
    """Raised when create_app or LitServer gets settings that cannot work."""


class WorkerStartupError(LitServeError, RuntimeError):
    """Raised when a worker cannot become ready: its setup raised or ran past the deadline."""


class RequestError(LitServeError):
    status: int = 500
    headers: dict[str, str] = {}

    def __init__(self, detail: Any = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail if detail is not None else self.__class__.__doc__
        if headers:
            self.headers = headers

    def body(self) -> bytes:
        return error_body(self.detail)


class BadRequest(RequestError):
    """The request body is not valid JSON."""

    status = 400


class Unauthorized(RequestError):
    """Missing or invalid X-API-Key header."""

    status = 401


class PayloadTooLarge(RequestError):
    """The request body is larger than max_payload_size."""

    status = 413


class UnsupportedMediaType(RequestError):
    """The body's Content-Type is not one this API takes."""

    status = 415


class ValidationFailed(RequestError):
    """The request body does not match the model's schema."""

    status = 422


class ServiceUnavailable(RequestError):
    """The server cannot take this request now; retry later."""

    status = 503

    def __init__(self, detail: Any = None, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"retry-after": str(retry_after)})


class WorkerDied(ServiceUnavailable):
    """The worker running this request exited before answering; it is being replaced.

    A request whose worker exits is retried once on another worker (see ``PoisonRequest``); this
    is what a stream that already sent part of its answer gets, since running it again would repeat it.
    """


class PoisonRequest(RequestError):
    """The worker running this request exited, and so did the one it was retried on; it is not retried again.

    Its body's fingerprint is remembered, so the same body is refused at once from then on.
    """

    status = 500


class RequestTimeout(RequestError):
    """The request did not complete within the server's timeout."""

    status = 504


class ClientDisconnected(RequestError):
    """The client closed the connection before its response."""

    status = 499


def startup_failed(exc: BaseException, retry_after: int = 30) -> ServiceUnavailable:
    """The 503 for a request that found the workers unable to start; says so once, not twice."""
    reason = str(exc) if isinstance(exc, WorkerStartupError) else f"{type(exc).__name__}: {exc}"
    if "could not start" not in reason:
        reason = f"the model workers could not start: {reason}"
    return ServiceUnavailable(reason, retry_after=retry_after)


def error_body(detail: Any) -> bytes:
    """The JSON body of every error response: ``{"detail": detail}``, as FastAPI writes it."""
    return pydantic_core.to_json({"detail": detail}, fallback=str)


def validation_failed(exc: ValidationError) -> RequestError:
    """A body that failed its pydantic model: 400 when it is not JSON at all, else 422 naming each field.

    Locations start with ``"body"``, as FastAPI's do (``["body", "input"]``).
    """
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if errors and errors[0].get("type") == "json_invalid":
        return invalid_json(errors[0].get("msg", ""))
    return ValidationFailed([{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors])


def invalid_json(reason: object) -> BadRequest:
    """400 for a body that is not JSON; ``reason`` is the parser's, without its own "Invalid JSON" prefix."""
    text = str(reason)
    for prefix in ("Invalid JSON: ", "invalid JSON: "):
        text = text.removeprefix(prefix)
    if text.startswith("EOF while parsing a value at line 1 column 0"):  # the parser's words for b""
        return BadRequest("the body is empty: send a JSON value, with Content-Type: application/json")
    return BadRequest(f"the body is not valid JSON: {text}" if text else "the body is not valid JSON")


def user_exception_reply(exc: BaseException) -> tuple[int, bytes, bytes]:
    """Status, body and extra headers (JSON, or b"") for an exception raised by user code in a worker."""
    status = getattr(exc, "status_code", None)
    if _is_http_exception(exc) and isinstance(status, int) and 400 <= status <= 599:
        headers = getattr(exc, "headers", None)
        tag = b""
        if isinstance(headers, dict) and headers:
            tag = pydantic_core.to_json({str(k): str(v) for k, v in headers.items()})
            if len(tag) > MAX_TAG_BYTES:
                tag = b""  # too large to carry; the status and detail still are
        return status, error_body(getattr(exc, "detail", None) or str(exc)), tag
    if isinstance(exc, RequestError):
        return exc.status, exc.body(), b""
    message = str(exc)
    return 500, error_body(f"{type(exc).__name__}: {message}" if message else type(exc).__name__), b""


def _is_http_exception(exc: BaseException) -> bool:
    # Starlette's and FastAPI's HTTPException (a subclass), without importing either in the worker.
    return any(cls.__name__ == "HTTPException" for cls in type(exc).__mro__)
