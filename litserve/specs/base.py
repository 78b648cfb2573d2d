"""``LitSpec``: what a spec contributes to the API it is given to.

On the app side a spec replaces the API's ``/predict`` route with its own routes (``routes``). On the
worker side it supplies the hooks the user did not write (``decode_request``, ``encode_response``,
``batch``, ``unbatch``): ``bind`` installs them on the API instance once, when the app is created,
so a worker calls them exactly as it calls the user's own, and an API without a spec pays nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..api import LitAPI
    from .exchange import SpecContext

_HOOKS = ("decode_request", "encode_response", "batch", "unbatch")


class _Model:
    """A picklable ``request_model`` for the API instance: the spec's request model, or the user's."""

    def __init__(self, model: type[BaseModel] | None) -> None:
        self.model = model

    def __call__(self) -> type[BaseModel] | None:
        return self.model


class ASGIRoute:
    """A raw ASGI endpoint for ``Route``: Starlette treats a plain function as a request handler."""

    def __init__(self, handle: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)


class LitSpec:
    """Base of the specs. Subclasses set ``stream`` and implement ``routes`` and the hooks they supply."""

    stream: bool = False  # the API runs as a stream on its worker, whatever its own setting

    def __init__(self) -> None:
        self.api: LitAPI | None = None

    # -- binding (app process, once) ---------------------------------------------------------------------
    def bind(self, api: LitAPI) -> None:
        """Make ``api`` serve this spec: its hooks where the user wrote none, its request model, its mode."""
        from ..api import LitAPI

        if self.api is not None and self.api is not api:
            raise ConfigurationError(f"{type(self).__name__} is already bound to another API; create one per API")
        self.api = api
        for name in _HOOKS:
            if getattr(type(api), name) is getattr(LitAPI, name) and hasattr(self, name):
                setattr(api, name, getattr(self, name))
        model = LitAPI.request_model(api) or self.request_model()
        api.request_model = _Model(model)  # type: ignore[method-assign]
        api.stream = self.stream
        self.check(api)

    def check(self, api: LitAPI) -> None:
        """Raise ConfigurationError, at app creation, for an API this spec cannot serve."""

    def request_model(self) -> type[BaseModel] | None:
        return None

    def populate_context(self, context: dict[str, Any], request: Any) -> None:
        """Fill the per-request ``context`` hooks may ask for (LitServe's hook; called before decode_request)."""

    # -- app side ----------------------------------------------------------------------------------------
    def routes(self, ctx: SpecContext) -> list[BaseRoute]:
        raise NotImplementedError

    def openapi_operations(self) -> dict[str, dict[str, Any]]:
        """``{path: {method: (summary, request model or None, {status: (media type, model or None)})}}``.

        A status may appear twice with different media types (``200`` and ``"200 "``); a model of
        None is OpenAI's error object.
        """
        return {}

    def openapi(self, doc: dict[str, Any], api_path: str) -> dict[str, Any]:
        """The app's OpenAPI document with the spec's routes in place of ``api_path``."""
        components = doc.setdefault("components", {}).setdefault("schemas", {})

        def ref(model: type[BaseModel] | None) -> dict[str, Any]:
            if model is None:
                return {}
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
            return {"$ref": f"#/components/schemas/{model.__name__}"}

        error = {
            "type": "object",
            "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"]}},
        }
        paths = {path: ops for path, ops in doc.get("paths", {}).items() if path != api_path}
        for path, methods in self.openapi_operations().items():
            for method, (summary, request, responses) in methods.items():
                operation: dict[str, Any] = {"summary": summary, "responses": {}}
                if request is not None:
                    content = {"application/json": {"schema": ref(request)}}
                    operation["requestBody"] = {"required": True, "content": content}
                for status, (media, model) in responses.items():
                    blank = {"description": summary, "content": {}}
                    entry = operation["responses"].setdefault(str(status).strip(), blank)
                    entry["content"][media] = {"schema": ref(model) if model is not None else error}
                paths.setdefault(path, {})[method] = operation
        return {**doc, "paths": paths}

    @property
    def batched(self) -> bool:
        return self.api is not None and self.api.max_batch_size > 1
