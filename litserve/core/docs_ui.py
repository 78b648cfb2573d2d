"""``GET /docs`` (Swagger UI), ``GET /openapi.json``, and JSON bodies for 404 and 405.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package, installed with litserve and
served by this app: the page works without internet access (no CDN at run time). Both the page and
the schema follow the path the app is mounted at (ASGI ``root_path``): mounted at ``/model``, the
schema lists ``/model/predict`` and the page loads ``/model/openapi.json``, so "Try it out" calls
the right URL.
"""

from __future__ import annotations

import copy
import html
import json
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - litserve</title>
<link rel="stylesheet" href="{root}/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="{root}/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{root}/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: {schema_url},
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
}});
</script>
</body>
</html>
"""


def assets_dir() -> Path | None:
    """Where Swagger UI's files are, or None when the package is missing."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(str(swagger_ui_bundle.swagger_ui_path))


def mounted_schema(schema: dict[str, Any], root_path: str) -> dict[str, Any]:
    """The schema with every path under ``root_path`` (the mount point), as clients must call it."""
    if not root_path:
        return schema
    doc = copy.copy(schema)
    doc["paths"] = {root_path + path: item for path, item in schema["paths"].items()}
    return doc


def routes(schema: dict[str, Any], title: str) -> list[Route]:
    """The routes serving the schema, the page, and the page's files."""
    directory = assets_dir()

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(mounted_schema(schema, request.scope.get("root_path", "")))

    async def page(request: Request) -> Response:
        if directory is None:
            return JSONResponse(
                {"detail": "Swagger UI is not installed: pip install swagger-ui-bundle-v2"}, status_code=404
            )
        root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
        schema_url = html.escape(json.dumps(f"{root}/openapi.json"), quote=False)
        return HTMLResponse(_PAGE.format(title=html.escape(title), root=root, schema_url=schema_url))

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if directory is None or name not in ASSETS:
            raise HTTPException(404)
        return FileResponse(
            directory / name, media_type=ASSETS[name], headers={"cache-control": "public, max-age=86400"}
        )

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", page, methods=["GET"]),
        Route("/docs/{name}", asset, methods=["GET"]),
    ]


def error_handlers(model_routes: list[str]) -> dict[Any, Any]:
    """404 and 405 as JSON ``{"detail": ...}``, like every other error, saying what would work.

    ``model_routes`` are the models' routes as ``"POST /predict"`` (a spec's: ``"GET /v1/models"`` too).
    """

    async def not_found(request: Request, exc: Exception) -> Response:
        root = request.scope.get("root_path", "")
        where = ", ".join(route.replace(" ", f" {root}", 1) for route in model_routes) or "not routed"
        detail = (
            f"Not Found: no route for {request.method} {request.url.path}; the model is at {where}, "
            f"and {root}/docs lists every route"
        )
        return JSONResponse({"detail": detail}, status_code=404)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        headers = getattr(exc, "headers", None) or {}
        allow = headers.get("Allow") or headers.get("allow") or ""
        detail = f"Method Not Allowed: {request.url.path} answers {allow or 'other methods'}, not {request.method}"
        return JSONResponse({"detail": detail}, status_code=405, headers=headers)

    return {404: not_found, 405: method_not_allowed}
