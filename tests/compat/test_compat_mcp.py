"""An API exposed as an MCP tool, called with the official ``mcp`` Python SDK over streamable HTTP."""

from __future__ import annotations

import asyncio

import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from serving import serve_file

pytestmark = pytest.mark.slow  # the test serves a file in a subprocess


async def _session(url: str) -> None:
    """The SDK's session over its streamable-HTTP transport: handshake, list, call."""
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.server_info.name == "litserve"
        assert init.protocol_version == "2025-11-25" and init.capabilities.tools is not None

        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"sentiment", "add", "table"}
        sentiment, add = tools["sentiment"], tools["add"]
        assert sentiment.description == "Tells whether a text is positive"
        assert add.description == "Adds numbers."  # the class docstring
        # the input schema is decode_request's pydantic model, under its parameter's name
        assert sentiment.input_schema["required"] == ["request"]
        assert sentiment.input_schema["$defs"]["TextRequest"]["properties"]["text"]["type"] == "string"
        assert add.input_schema["$defs"]["Numbers"]["properties"]["values"]["type"] == "array"
        # encode_response's return annotation is the output schema; results come structured too
        assert set(sentiment.output_schema["properties"]) == {"label", "score"}

        result = await session.call_tool("sentiment", {"request": {"text": "a good day"}})
        assert result.is_error is False
        assert result.structured_content == {"label": "negative", "score": 1 / 3}
        result = await session.call_tool("add", {"request": {"values": [1, 2.5]}})
        assert result.is_error is False and result.structured_content == {"sum": 3.5}
        assert result.content[0].type == "text" and result.content[0].text == '{"sum":3.5}'

        refused = await session.call_tool("add", {"request": {"values": []}})  # HTTPException in a hook
        assert refused.is_error is True and "give at least one number" in refused.content[0].text
        invalid = await session.call_tool("add", {"request": {"values": "x"}})  # fails the request model
        assert invalid.is_error is True and "values" in invalid.content[0].text
        # a StreamingResponse from encode_response: its body is the tool's text
        table = await session.call_tool("table", {"request": {"values": [1, 2]}})
        assert table.is_error is False and table.content[0].text == "1,1\n2,4\n"
        with pytest.raises(MCPError):
            await session.call_tool("nope", {})


async def _client(url: str) -> None:
    """The SDK's high-level client, which probes for the stateless revision before the handshake."""
    async with Client(url) as client:
        result = await client.call_tool("add", {"request": {"values": [2, 3]}})
        assert result.structured_content == {"sum": 5.0}


def test_the_official_mcp_client_lists_and_calls_the_tools(tmp_path):
    with serve_file("mcp_tools.py", tmp_path) as proc:
        asyncio.run(_session(proc.url + "/mcp/"))
        asyncio.run(_client(proc.url + "/mcp"))
