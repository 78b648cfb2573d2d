"""``litserve.mcp.MCP``: expose a ``LitAPI`` as a Model Context Protocol tool (LitServe's API).

``MyAPI(mcp=MCP(description="Classifies sentiment"))`` adds the API as a tool to the server's MCP
endpoint, ``POST /mcp/`` (MCP's "streamable HTTP" transport, stateless, JSON responses). The tool's
name is the API's path (``/predict`` → ``predict``) unless ``name=`` is given; its input schema comes
from ``decode_request``'s annotation (a pydantic model), so an agent calls it with
``{"request": {...the model's fields...}}``. A call goes through the same queue, workers, timeout and
errors as an HTTP request to the API.

This is a small JSON-RPC implementation of the parts of MCP a tool server needs (``initialize``,
``ping``, ``tools/list``, ``tools/call``, notifications), with no dependency; LitServe uses the
``mcp`` package for the same endpoint. The official ``mcp`` client talks to it (tests/compat): its
``server/discover`` probe (the stateless 2026-07-28 revision) gets "method not found", on which the
client falls back to the ``initialize`` handshake, as the protocol intends. A result that is a JSON
object is also sent as ``structuredContent``, and a response model gives the tool an ``outputSchema``.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import typing
from collections.abc import Sequence
from typing import Any

import pydantic_core
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from .auth import Authorized, has_authorize
from .errors import RequestError

logger = logging.getLogger("litserve")

# the initialize-handshake revisions, newest first; a client asking for another gets the newest
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
_PARSE_ERROR, _INVALID_REQUEST, _METHOD_NOT_FOUND, _INVALID_PARAMS = -32700, -32600, -32601, -32602


class MCP:
    """Marks a ``LitAPI`` as an MCP tool.

    Args:
        description: what the tool does, for the agent choosing it (default: the API class's docstring).
        input_schema: a JSON schema for the tool's arguments (default: from ``decode_request``).
        name: the tool's name (default: the API's path, ``/`` replaced by ``_``).
    """

    def __init__(self, description: str | None = None, input_schema: dict | None = None, name: str | None = None):
        self.description = description
        self.input_schema = input_schema
        self.name = name

    def tool(self, api: Any, api_path: str) -> dict[str, Any]:
        """The tool's MCP description for ``api`` served at ``api_path``."""
        name = self.name or api_path.strip("/").replace("/", "_")
        description = self.description or inspect.getdoc(type(api)) or ""
        if not name or not description:
            raise ValueError(f"MCP tool for {type(api).__name__} needs a name and a description")
        tool = {"name": name, "description": description, "inputSchema": self.input_schema or input_schema(api)}
        output = api.response_model()
        if output is not None:  # encode_response annotated with a pydantic model: results are checked against it
            tool["outputSchema"] = output.model_json_schema()
        return tool


def input_schema(api: Any) -> dict[str, Any]:
    """JSON schema of ``decode_request``'s parameter: the pydantic model it is annotated with, else any object."""
    params = list(inspect.signature(api.decode_request).parameters.values())
    if not params:
        return {"type": "object", "properties": {}}
    name = params[0].name
    try:
        hint = typing.get_type_hints(api.decode_request).get(name)
    except Exception:
        hint = None
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        schema = hint.model_json_schema()
        defs = schema.pop("$defs", {})
        defs[hint.__name__] = schema
        ref = {"$ref": f"#/$defs/{hint.__name__}"}
        return {"type": "object", "properties": {name: ref}, "required": [name], "$defs": defs}
    return {"type": "object", "properties": {name: {"type": "object"}}, "required": [name]}


class ToolTarget:
    """What a tool call needs: the API, its path, and how to submit to its workers."""

    def __init__(self, api: Any, api_path: str, pool: Any, metrics: Any, timeout: float | None) -> None:
        self.api = api
        self.pool = pool
        self.metrics = metrics
        self.timeout = timeout
        self.tool = api.mcp.tool(api, api_path)
        self.authorizer = Authorized(None, api) if has_authorize(api) else None
        params = list(inspect.signature(api.decode_request).parameters)
        self.argument = params[0] if params else None

    def body(self, arguments: Any) -> bytes:
        if isinstance(arguments, dict) and self.argument is not None and set(arguments) == {self.argument}:
            arguments = arguments[self.argument]
        return pydantic_core.to_json(arguments)


def mcp_routes(targets: Sequence[ToolTarget], api_key: str | None = None) -> list[Route]:
    """``/mcp`` and ``/mcp/`` for the tools in ``targets`` (none if there are none).

    The endpoint is guarded like the model route: ``X-API-Key`` when the server has a key, and each
    API's ``authorize`` before a call of its tool.
    """
    if not targets:
        return []
    key = api_key.encode() if api_key else None
    by_name = {t.tool["name"]: t for t in targets}
    if len(by_name) != len(targets):
        raise ValueError("two MCP tools have the same name; give one MCP(name=...)")

    async def endpoint(request: Request) -> Response:
        if request.method != "POST":
            return Response(status_code=405, headers={"allow": "POST"})
        if key is not None:
            given = request.headers.get("x-api-key")
            if given is None or not hmac.compare_digest(given.encode("latin-1", "replace"), key):
                return JSONResponse({"detail": "missing or invalid X-API-Key header"}, status_code=401)
        try:
            message = json.loads(await request.body())
        except ValueError as exc:
            return _rpc_error(None, _PARSE_ERROR, f"invalid JSON: {exc}")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or "method" not in message:
            rid = message.get("id") if isinstance(message, dict) else None
            return _rpc_error(rid, _INVALID_REQUEST, "not JSON-RPC 2.0")
        if "id" not in message:  # a notification (initialized, cancelled): nothing to answer
            return Response(status_code=202)
        rid, method, params = message["id"], message["method"], message.get("params") or {}
        if method == "initialize":
            from . import __version__ as server_version

            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            return _rpc_result(
                rid,
                {
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": "litserve", "version": server_version},
                },
            )
        if method == "ping":
            return _rpc_result(rid, {})
        if method == "tools/list":
            return _rpc_result(rid, {"tools": [t.tool for t in targets]})
        if method == "tools/call":
            target = by_name.get(params.get("name"))
            if target is None:
                return _rpc_error(rid, _INVALID_PARAMS, f"unknown tool {params.get('name')!r}")
            if target.authorizer is not None:
                rejection = await target.authorizer.check(request.scope)
                if rejection is not None:  # authorize refused: its answer, as it would be on the model route
                    return _replay(rejection)
            return _rpc_result(rid, await _call(target, params.get("arguments") or {}, request.receive))
        return _rpc_error(rid, _METHOD_NOT_FOUND, f"method {method!r} not found")

    return [Route(path, endpoint, methods=["GET", "POST"]) for path in ("/mcp", "/mcp/")]


async def _call(target: ToolTarget, arguments: Any, receive: Receive) -> dict[str, Any]:
    import asyncio

    from .core.handler import CallGuard, new_request_id

    pool = target.pool
    try:
        if target.api.stream:
            raise ValueError("a streaming API cannot be called as an MCP tool")
        await pool.ensure_started()
        loop = asyncio.get_running_loop()
        call = pool.submit(target.body(arguments), new_request_id())
        # the model route's deadline and cancellation: the call is cancelled however this ends
        with CallGuard(target, call, receive, loop.time(), loop) as guard:
            status, payload, tag = await guard.reply()
            if call.streamed:  # encode_response returned a StreamingResponse or FileResponse: its body
                status, payload, tag = await _streamed_body(guard)
        text = payload.decode("utf-8", "replace")
        result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": status >= 400}
        if status < 400 and not tag and payload[:1] == b"{":  # a JSON object: also as structured content
            try:
                result["structuredContent"] = json.loads(payload)
            except ValueError:
                pass
        return result
    except RequestError as exc:
        return {"content": [{"type": "text", "text": exc.body().decode()}], "isError": True}
    except Exception as exc:
        return {"content": [{"type": "text", "text": f"{type(exc).__name__}: {exc}"}], "isError": True}


MAX_STREAMED_RESULT = 16 * 1024 * 1024  # bytes of a streamed body a tool result may hold


async def _streamed_body(guard: Any) -> tuple[int, bytes, bytes]:
    """A streamed Response's body gathered into one tool result (a tool result is one message)."""
    from .core.protocol import CHUNK

    parts: list[bytes] = []
    size = 0
    async for kind, status, payload, _tag in guard:
        if kind != CHUNK:
            return (200, b"".join(parts), b"R") if status == 200 else (status, payload, b"")
        size += len(payload)
        if size > MAX_STREAMED_RESULT:
            raise ValueError(f"the response body is over {MAX_STREAMED_RESULT} bytes, too large for a tool result")
        parts.append(payload)
    return 200, b"".join(parts), b"R"


def _replay(messages: list[Any]) -> Response:
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", []) if k != b"content-length"}
    return Response(body, status_code=start["status"], headers=headers)


def _rpc_result(rid: Any, result: Any) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": rid, "result": result})


def _rpc_error(rid: Any, code: int, message: str) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})
