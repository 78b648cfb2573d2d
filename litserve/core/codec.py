"""Bytes <-> values inside a worker: the request body in, the response body (or a chunk) out.

pydantic-core does both directions: it is already a dependency, it is fast, and it serialises pydantic
models, dataclasses and datetimes natively. Tensors and arrays go through ``tolist()``.

JSON numbers are finite (RFC 8259): ``NaN``, ``Infinity`` and ``-Infinity`` are refused on the way in
(400, like any invalid JSON) and on the way out (500 naming the problem, never invalid JSON on the
wire). On the hot path the check is a one-byte scan (``memchr``); the word search and the strict parse
run only when it hits. A number too large for a double (``1e999``) parses as infinity: when that
reaches the response, the request, not ``encode_response``, is to blame and gets 400
(``blame_the_request``, consulted only on that error path).
"""

from __future__ import annotations

import math
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from ..errors import invalid_json, validation_failed


class RequestDecoder:
    """Parses a request body, through the request model when ``decode_request`` declares one."""

    def __init__(self, model: type[BaseModel] | None) -> None:
        self.model = model

    def __call__(self, body: bytes) -> Any:
        if self.model is not None:
            reject_non_finite(body)  # pydantic's JSON parser accepts NaN/Infinity for a float field
            try:
                return self.model.model_validate_json(body)
            except ValidationError as exc:
                raise validation_failed(exc) from None
        try:
            return pydantic_core.from_json(body, allow_inf_nan=False)
        except ValueError as exc:
            raise invalid_json(f"{exc}{_hint(body)}") from None


class ResponseEncoder:
    """Serialises what ``encode_response`` returned, through the response model when annotated."""

    def __init__(self, model: type[BaseModel] | None) -> None:
        self.model = model

    def __call__(self, value: Any) -> bytes:
        if self.model is not None and isinstance(value, dict):
            value = self.model.model_validate(value)
        if isinstance(value, BaseModel):
            out = value.__pydantic_serializer__.to_json(value)
            # pydantic writes a non-finite float as null: look closer only when a null is there at all
            if b"null" in out and _has_non_finite(value.model_dump()):
                raise NonFiniteNumber(_NON_FINITE_OUT)
            return out
        out = pydantic_core.to_json(value, fallback=_fallback)
        if _may_hold_non_finite(out):  # as tokens they are not JSON; inside strings they are fine
            try:
                pydantic_core.from_json(out, allow_inf_nan=False)
            except ValueError:
                raise NonFiniteNumber(_NON_FINITE_OUT) from None
        return out


class NonFiniteNumber(ValueError):
    """What ``encode_response`` returned holds NaN or ±Infinity, which JSON cannot carry (a 500)."""


_NON_FINITE_OUT = (
    "encode_response returned a non-finite number (NaN, Infinity or -Infinity), which is not valid JSON "
    "(RFC 8259); replace it (e.g. with None) or check the model's output"
)


def _may_hold_non_finite(data: bytes) -> bool:
    # one-byte searches are memchr (GB/s); the word searches run only for bytes holding an N or an I
    return (b"N" in data or b"I" in data) and (b"NaN" in data or b"Infinity" in data)


def reject_non_finite(body: bytes) -> None:
    """BadRequest if ``body`` holds NaN/Infinity as a JSON number (a scan first; a parse only on a hit)."""
    if _may_hold_non_finite(body):
        try:
            pydantic_core.from_json(body, allow_inf_nan=False)
        except ValueError as exc:
            raise invalid_json(f"{exc}{_hint(body)}") from None


def _hint(body: bytes) -> str:
    if b"NaN" in body or b"Infinity" in body:
        return " (NaN, Infinity and -Infinity are not JSON numbers)"
    return ""


def blame_the_request(exc: Exception, body: bytes) -> Exception:
    """``exc`` from encoding a response, or a 400 when the non-finite number came from ``body`` itself
    (a number like ``1e999`` overflows to infinity when parsed). Only called on the error path."""
    if isinstance(exc, NonFiniteNumber):
        try:
            value = pydantic_core.from_json(body, allow_inf_nan=False)
        except ValueError:
            return exc
        if _has_non_finite(value):
            return invalid_json("a number is too large for a 64-bit float (JSON numbers must be finite)")
    return exc


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def _fallback(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot serialise {type(value).__name__!r} to JSON; convert it in encode_response")
