"""Request and response shapes LitServe accepts, from server files written as its docs write them:
per-request ``context``, ``multipart/form-data`` uploads, a ``Response`` returned by
``encode_response``, and an API exposed as an MCP tool."""

from __future__ import annotations

import json

import httpx
import pytest
from serving import serve_file

pytestmark = pytest.mark.slow  # each test serves a file in a subprocess


def test_context_dict_is_shared_by_the_hooks_of_one_request(tmp_path):
    with serve_file("context_dict.py", tmp_path) as proc:
        for x in (2, 3):
            r = httpx.post(proc.url + "/predict", json={"input": x})
            assert r.status_code == 200 and r.json() == {"output": x * x + 1, "input": x, "squared": x * x}


def test_multipart_upload_with_fields(tmp_path):
    with serve_file("file_upload.py", tmp_path) as proc:
        files = {"document": ("notes.txt", b"hello\r\nworld", "text/plain")}
        r = httpx.post(proc.url + "/predict", files=files, data={"tag": "t1"})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "filename": "notes.txt",
            "content_type": "text/plain",
            "size": 12,
            "upper": "HELLO\r\nWORLD",
            "tag": "t1",
        }
        # the body limit (1MB) holds for uploads, checked as the body streams in
        big = {"document": ("big.bin", b"x" * 1_100_000, "application/octet-stream")}
        assert httpx.post(proc.url + "/predict", files=big, data={"tag": "t"}).status_code == 413
        broken = httpx.post(
            proc.url + "/predict",
            content=b"--b\r\nnot a part",
            headers={"content-type": "multipart/form-data; boundary=zzz"},
        )
        assert broken.status_code == 400
        # JSON still works on the same route (decode_request gets the parsed body)
        assert httpx.post(proc.url + "/predict", json={"document": 1}).status_code == 500


def test_response_returned_by_encode_response_is_sent_as_is(tmp_path):
    with serve_file("response_object.py", tmp_path) as proc:
        r = httpx.post(proc.url + "/predict", json={"rows": 3})
        assert r.status_code == 201
        assert r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"] == "attachment; filename=squares.csv"
        assert r.headers["x-rows"] == "3"
        assert r.text == "n,square\n0,0\n1,1\n2,4\n"
        assert "x-request-id" in r.headers


def _rpc(client: httpx.Client, method: str, params: dict | None = None, rid: int = 1) -> dict:
    r = client.post(
        "/mcp/",
        json={"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_mcp_tool_lists_and_calls_the_api(tmp_path):
    with serve_file("mcp_tool.py", tmp_path) as proc, httpx.Client(base_url=proc.url, timeout=30) as client:
        init = _rpc(client, "initialize", {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {}})
        assert init["result"]["protocolVersion"] == "2025-03-26"
        assert "tools" in init["result"]["capabilities"]
        note = client.post("/mcp/", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert note.status_code == 202
        tools = _rpc(client, "tools/list", rid=2)["result"]["tools"]
        assert [t["name"] for t in tools] == ["predict"]
        assert tools[0]["description"] == "Counts the words in a text"
        schema = tools[0]["inputSchema"]
        assert schema["required"] == ["request"] and "TextRequest" in schema["$defs"]
        result = _rpc(client, "tools/call", {"name": "predict", "arguments": {"request": {"text": "a b c"}}}, rid=3)
        assert result["result"]["isError"] is False
        assert json.loads(result["result"]["content"][0]["text"]) == {"words": 3}
        bad = _rpc(client, "tools/call", {"name": "predict", "arguments": {"request": {"txt": 1}}}, rid=4)
        assert bad["result"]["isError"] is True
        unknown = _rpc(client, "tools/call", {"name": "nope", "arguments": {}}, rid=5)
        assert unknown["error"]["code"] == -32602
        # the HTTP route still serves the same API
        assert client.post("/predict", json={"text": "one two"}).json() == {"words": 2}


def test_openai_spec_fills_the_context_from_the_request(tmp_path):
    with serve_file("openai_context.py", tmp_path) as proc:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.25}
        r = httpx.post(proc.url + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "hi at temperature 0.25"


def test_decode_request_annotated_with_request_gets_the_parsed_body(tmp_path):
    with serve_file("request_annotated.py", tmp_path) as proc:
        r = httpx.post(proc.url + "/predict", json={"input": 4})
        assert r.status_code == 200 and r.json() == {"output": 40}
        form = httpx.post(proc.url + "/predict", data={"input": "ab"})  # a form: request["input"] is a str
        assert form.status_code == 200 and form.json() == {"output": "ab" * 10}


def test_mcp_endpoint_is_guarded_like_the_model_route(tmp_path):
    with serve_file("mcp_guarded.py", tmp_path, env={"LIT_SERVER_API_KEY": "k1"}) as proc:
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "add", "arguments": {"request": {"values": [1, 2]}}},
        }
        assert httpx.post(proc.url + "/mcp/", json=call).status_code == 401  # no key
        refused = httpx.post(proc.url + "/mcp/", json=call, headers={"X-API-Key": "k1"})
        assert refused.status_code == 403 and refused.json() == {"detail": "unknown tenant"}  # authorize
        ok = httpx.post(proc.url + "/mcp/", json=call, headers={"X-API-Key": "k1", "X-Tenant": "acme"})
        assert ok.status_code == 200 and json.loads(ok.json()["result"]["content"][0]["text"]) == {"sum": 3.0}
        listed = httpx.post(
            proc.url + "/mcp/", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers={"X-API-Key": "k1"}
        )
        assert listed.json()["result"]["tools"][0]["description"] == "Adds numbers."  # the class docstring


def test_context_and_log_in_async_hooks(tmp_path):
    import concurrent.futures

    from support.poll import wait_for

    with serve_file("async_context.py", tmp_path) as proc:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda x: httpx.post(proc.url + "/predict", json={"input": x}), range(4)))
        assert [r.json() for r in replies] == [{"output": 2 * x, "input": x} for x in range(4)]
        wait_for(lambda: all(f"async log doubled={x}" in proc.output() for x in range(4)), timeout=20)
