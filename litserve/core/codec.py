"""Bytes <-> values inside a worker: the request body in, the response body (or a chunk) out.

pydantic-core does both directions: it is already a dependency, it is fast, and it serialises pydantic
models, dataclasses and datetimes natively. Tensors and arrays go through ``tolist()``.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from ..errors import BadRequest, ValidationFailed


class RequestDecoder:
    """Parses a request body, through the request model when ``decode_request`` declares one."""

    def __init__(self, model: type[BaseModel] | None) -> None:
        self.model = model

    def __call__(self, body: bytes) -> Any:
        if self.model is not None:
            try:
                return self.model.model_validate_json(body)
            except ValidationError as exc:
                raise validation_error(exc) from None
        try:
            return pydantic_core.from_json(body)
        except ValueError as exc:
            raise BadRequest(f"Invalid JSON body: {exc}") from None


class ResponseEncoder:
    """Serialises what ``encode_response`` returned, through the response model when annotated."""

    def __init__(self, model: type[BaseModel] | None) -> None:
        self.model = model

    def __call__(self, value: Any) -> bytes:
        if isinstance(value, BaseModel):
            return value.__pydantic_serializer__.to_json(value)
        if self.model is not None and isinstance(value, dict):
            value = self.model.model_validate(value)
            return value.__pydantic_serializer__.to_json(value)
        return pydantic_core.to_json(value, fallback=_fallback)


def _fallback(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot serialise a {type(value).__name__} to JSON; convert it in encode_response")


def validation_error(exc: ValidationError) -> Exception:
    """A 400 when the body is not JSON at all, else a 422 that names each failing field."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if errors and errors[0].get("type") == "json_invalid":
        return BadRequest(f"Invalid JSON body: {errors[0].get('msg')}")
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return ValidationFailed(detail)
