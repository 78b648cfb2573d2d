"""Request validation in the app process, before a request is queued, and the OpenAPI document.

Validating here means a bad request costs no worker time and gets its 400/422 even while every
worker is busy. Only APIs whose ``decode_request`` declares a pydantic model are validated here;
for the others the worker parses the JSON and answers 400 itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import validation_failed
from .codec import reject_non_finite


def body_validator(model: type[BaseModel] | None) -> Callable[[bytes], None] | None:
    """A function raising BadRequest/ValidationFailed for a bad body, or None when nothing to check."""
    if model is None:
        return None
    validate = model.__pydantic_validator__.validate_json

    def check(body: bytes) -> None:
        reject_non_finite(body)  # pydantic's JSON parser takes NaN/Infinity for a float; RFC 8259 does not
        try:
            validate(body)
        except ValidationError as exc:
            raise validation_failed(exc) from None

    return check


def openapi(
    title: str,
    api_path: str,
    request_model: type[BaseModel] | None,
    response_model: type[BaseModel] | None,
    *,
    stream: bool,
    auth: bool,
) -> dict[str, Any]:
    """An OpenAPI 3.1 document for the model route, built from the pydantic models when declared."""
    defs: dict[str, Any] = {}

    def schema_of(model: type[BaseModel] | None) -> dict[str, Any]:
        if model is None:
            return {}
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}
    err = {"content": {"application/json": {"schema": error}}}
    media = "application/x-ndjson" if stream else "application/json"
    operation: dict[str, Any] = {
        "summary": "Run the model",
        "operationId": "predict",
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema_of(request_model)}}},
        "responses": {
            "200": {"description": "The model's response", "content": {media: {"schema": schema_of(response_model)}}},
            "400": {"description": "Body is not valid JSON", **err},
            "413": {"description": "Body too large", **err},
            "422": {"description": "Body does not match the schema", **err},
            "500": {"description": "The model raised", **err},
            "503": {"description": "Overloaded or not ready; retry after Retry-After", **err},
            "504": {"description": "Timed out", **err},
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1.0.0"},
        "paths": {api_path: {"post": operation}},
        "components": {"schemas": defs},
    }
    if auth:
        operation["responses"]["401"] = {"description": "Missing or wrong X-API-Key", **err}
        doc["components"]["securitySchemes"] = {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        operation["security"] = [{"apiKey": []}]
    return doc
