"""OpenAI's error object, and the status each failure gets on the ``/v1`` routes.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and raise by status
(``openai.BadRequestError`` for 400, ``AuthenticationError`` for 401, ...). A schema mismatch is
400 ``invalid_request_error`` naming the field in ``param``, as OpenAI answers it, where litserve's
own routes answer 422: an OpenAI client has no class for 422 it would expect here.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic import ValidationError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
    504: "timeout_error",
}


def error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_object(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def error_json(status: int, message: str, *, param: str | None = None, code: str | None = None) -> bytes:
    return pydantic_core.to_json(error_object(status, message, param=param, code=code))


def from_validation(exc: ValidationError) -> tuple[str, str | None]:
    """(message, param) for a pydantic error: the first failing field, as OpenAI names one."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"We could not parse the JSON body of your request: {first.get('msg')}", None
    param = ".".join(str(p) for p in first["loc"] if not isinstance(p, str) or not _is_union_tag(p)) or None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    where = f"'{param}': " if param else ""
    return f"Invalid request: {where}{first['msg']}{more}", param


def _is_union_tag(part: str) -> bool:
    # pydantic puts the union member it tried into the location ("str", "list[...]", "function-after[...]")
    return part in ("str", "int", "float", "bool") or "[" in part


def from_litserve_body(status: int, body: bytes) -> bytes:
    """Re-shape a litserve error body (``{"detail": detail}``) from the pool or a worker as OpenAI's object.

    A body that already is OpenAI's object (the spec's own code raised it) is kept as it is.
    """
    try:
        value = pydantic_core.from_json(body) if body else None
    except ValueError:
        value = None
    own = value.get("error") if isinstance(value, dict) else None
    if isinstance(own, dict) and "message" in own and "type" in own:
        return body
    detail = value.get("detail") if isinstance(value, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # a 422 list from the codec
        first = detail[0]
        loc = list(first.get("loc", ()))
        param = ".".join(str(p) for p in (loc[1:] if loc[:1] == ["body"] else loc)) or None
        return error_json(400, f"Invalid request: {first.get('msg', 'invalid value')}", param=param)
    message = detail if isinstance(detail, str) else (pydantic_core.to_json(detail).decode() if detail else "")
    return error_json(status, message or default_message(status))


def default_message(status: int) -> str:
    return {
        400: "Bad request",
        401: "Invalid or missing API key",
        404: "Not found",
        413: "Request body too large",
        499: "Client closed the request",
        500: "The model raised an error",
        503: "The server is overloaded or not ready; retry later",
        504: "The request timed out",
    }.get(status, "Request failed")
