"""``OpenAISpec`` end to end: the official ``openai`` client (sync and async, streamed and not, tools)
and raw SSE parsing against a real server on 127.0.0.1 with a real spawned worker."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import openai
import pytest
from apis_openai import EchoLLM, RequestLLM, ToolLLM
from support.http import connect, read_response, status_count
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls
from litserve.specs import sse

HELLO = [{"role": "user", "content": "hello there world"}]
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def echo(tmp_path_factory, monkeypatch_module):
    log = tmp_path_factory.mktemp("openai") / "steps.log"
    monkeypatch_module.setenv("LITSERVE_TEST_LOG", str(log))  # read by the worker's setup
    app = ls.create_app(EchoLLM(spec=ls.OpenAISpec()), accelerator="cpu", devices=1, timeout=20)
    with ThreadServer(app) as server:
        server.log = log
        yield server


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def client(server, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30, **kw)


# -- the official client -----------------------------------------------------------------------------------
def test_non_streamed_completion_joins_the_chunks_and_sums_usage(echo):
    r = client(echo).chat.completions.create(model="tiny", messages=HELLO)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "tiny"
    assert len(r.choices) == 1 and r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == "hello there world"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (1, 3, 4)


def test_streamed_completion_with_n_choices_and_usage(echo):
    stream = client(echo).chat.completions.create(
        model="tiny", messages=HELLO, stream=True, n=2, stream_options={"include_usage": True}
    )
    text = {0: "", 1: ""}
    finish, ids, usage = {}, set(), None
    for chunk in stream:
        ids.add(chunk.id)
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
        for choice in chunk.choices:
            text[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert text == {0: "hello there world", 1: "hello there world"}
    assert finish == {0: "stop", 1: "stop"} and len(ids) == 1
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2, 6, 8)


def test_one_streamed_choice_ends_with_its_reason_then_the_usage_chunk(echo):
    chunks = list(
        client(echo).chat.completions.create(
            model="tiny", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.delta.content or "" for ch in chunks for c in ch.choices) == "hello there world"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-2].usage is None
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 4


def test_async_client_streamed_and_not(echo):
    async def run():
        aclient = openai.AsyncOpenAI(base_url=echo.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        async with aclient:
            whole = await aclient.chat.completions.create(model="tiny", messages=HELLO)
            parts = []
            stream = await aclient.chat.completions.create(model="tiny", messages=HELLO, stream=True)
            async for chunk in stream:
                parts.extend(c.delta.content or "" for c in chunk.choices)
            return whole.choices[0].message.content, "".join(parts)

    assert asyncio.run(run()) == ("hello there world", "hello there world")


def test_models_lists_what_is_served(echo):
    assert [m.id for m in client(echo).models.list()] == ["EchoLLM"]


def test_invalid_request_is_400_with_the_field_in_param(echo):
    with pytest.raises(openai.BadRequestError) as info:
        client(echo).chat.completions.create(model="tiny", messages=HELLO, temperature=3)
    assert info.value.status_code == 400
    assert info.value.body["type"] == "invalid_request_error" and info.value.body["param"] == "temperature"


def test_user_code_that_raises_is_500_with_openais_error_object(echo):
    with pytest.raises(openai.InternalServerError) as info:
        client(echo).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "raise"}])
    assert info.value.body["message"] == "ValueError: the model refused"
    assert info.value.body["type"] == "server_error"


def test_an_error_mid_stream_reaches_the_client_as_an_error_event(echo):
    stream = client(echo).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "fail midway"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError, match="lost the GPU"):
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert got == ["partial"]


# -- raw HTTP ----------------------------------------------------------------------------------------------
def test_raw_sse_is_data_lines_of_chunks_ending_with_done(echo):
    body = {"model": "tiny", "messages": HELLO, "stream": True}
    with httpx.Client(base_url=echo.url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            raw = r.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = sse.parse(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "hello there world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_malformed_json_and_wrong_method(echo):
    with httpx.Client(base_url=echo.url, timeout=30) as http:
        r = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        assert http.get("/v1/chat/completions").status_code == 405
        assert http.options("/v1/chat/completions").status_code == 200
        assert http.post("/predict", json={}).status_code in (404, 405)  # the spec's routes replace /predict


def test_a_client_leaving_mid_stream_stops_the_generation_on_the_worker(echo):
    tag = uuid.uuid4().hex[:8]
    body = {"model": "tiny", "messages": [{"role": "user", "content": f"slow:{tag}"}], "stream": True}

    def steps() -> list[int]:
        lines = echo.log.read_text().splitlines() if echo.log.exists() else []
        return [json.loads(x)["step"] for x in lines if json.loads(x)["tag"] == tag]

    with httpx.Client(base_url=echo.url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            seen = 0
            for line in lines:
                seen += line.startswith("data: ")
                if seen == 3:
                    break
        # the connection is closed here; the one worker is free again only if the generator stopped
    r = client(echo).chat.completions.create(model="tiny", messages=HELLO)
    assert r.choices[0].message.content == "hello there world"
    stopped_at = len(steps())
    assert stopped_at < 1000  # far below the 10 000 steps the generator would run
    wait_for(lambda: len(steps()) == stopped_at, timeout=5)  # and it stays stopped


# -- other shapes of the user's API --------------------------------------------------------------------------
def test_tool_calls_streamed_and_not():
    with ThreadServer(ls.create_app(ToolLLM(spec=ls.OpenAISpec()), accelerator="cpu", devices=1, timeout=20)) as s:
        check_tool_calls(s)


def check_tool_calls(server):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "weather in Paris?"}]
    r = client(server).chat.completions.create(model="tiny", messages=messages, tools=tools, tool_choice="auto")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_1",
        "get_weather",
        {"city": "Paris"},
    )
    chunks = list(client(server).chat.completions.create(model="tiny", messages=messages, tools=tools, stream=True))
    deltas = [tc for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or ()]
    assert [(d.index, d.id, d.function.name) for d in deltas] == [(0, "call_1", "get_weather")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_decode_request_receives_the_validated_request_and_auth_takes_bearer():
    app = ls.create_app(
        RequestLLM(spec=ls.OpenAISpec(model_name="tiny")), accelerator="cpu", devices=1, timeout=20, api_key="s3cret"
    )
    with ThreadServer(app) as server:
        check_request_and_auth(server)


def check_request_and_auth(server):
    r = client(server, default_headers={"Authorization": "Bearer s3cret"}).chat.completions.create(
        model="tiny", messages=HELLO, temperature=0.5
    )
    assert json.loads(r.choices[0].message.content) == {"model": "tiny", "temperature": 0.5, "n_messages": 1}
    with pytest.raises(openai.AuthenticationError) as info:
        client(server).chat.completions.create(model="tiny", messages=HELLO)
    assert info.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as info:
        openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret", max_retries=0).chat.completions.create(
            model="other", messages=HELLO
        )
    assert info.value.body["code"] == "model_not_found"


def test_predict_that_returns_is_refused_with_an_example():
    class Returns(ls.LitAPI):
        def predict(self, x):
            return "text"

    with pytest.raises(ls.ConfigurationError, match="generator"):
        ls.create_app(Returns(spec=ls.OpenAISpec()), accelerator="cpu", devices=1)
    with pytest.raises(ls.ConfigurationError, match="one per API"):
        spec = ls.OpenAISpec()
        ls.create_app(EchoLLM(spec=spec), accelerator="cpu", devices=1)
        ls.create_app(EchoLLM(spec=spec), accelerator="cpu", devices=1)


def test_litserver_spec_argument_is_litserves_spelling():
    with pytest.warns(DeprecationWarning, match="spec= on the server is deprecated"):
        server = ls.LitServer(EchoLLM(), spec=ls.OpenAISpec(), accelerator="cpu", devices=1)
    paths = {getattr(r, "path", None) for r in server.app.routes}
    assert {"/v1/chat/completions", "/v1/models"} <= paths and "/predict" not in paths


def test_openapi_documents_the_spec_routes_instead_of_predict(echo):
    doc = httpx.get(echo.url + "/openapi.json", timeout=10).json()
    assert "/predict" not in doc["paths"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert "400" in chat["responses"] and "ChatCompletionChunk" in doc["components"]["schemas"]
    assert "get" in doc["paths"]["/v1/models"]


def test_async_predict_runs_concurrent_streams():
    from concurrent.futures import ThreadPoolExecutor

    from apis_openai import AsyncLLM

    api = AsyncLLM(spec=ls.OpenAISpec(), max_concurrency=8)
    with ThreadServer(ls.create_app(api, accelerator="cpu", devices=1, timeout=20)) as server:

        def ask(i: int) -> str:
            messages = [{"role": "user", "content": f"async stream {i}"}]
            chunks = client(server).chat.completions.create(model="m", messages=messages, stream=True)
            return "".join(c.delta.content or "" for ch in chunks for c in ch.choices)

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(ask, range(8))) == [f"async stream {i} " for i in range(8)]


def test_predict_with_context_gets_the_request_fields_extra_ones_included():
    from apis_openai import ContextLLM

    with ThreadServer(ls.create_app(ContextLLM(spec=ls.OpenAISpec()), accelerator="cpu", devices=1)) as server:
        r = client(server).chat.completions.create(model="m", messages=HELLO, temperature=0.3, extra_body={"top_k": 40})
    assert json.loads(r.choices[0].message.content) == {"temperature": 0.3, "top_k": 40, "n": 1}


# -- the body: read as the model route reads it ------------------------------------------------------------
BODY_LIMIT, BODY_BUDGET = 2000, 1.0


@pytest.fixture(scope="module")
def limited_echo(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("LITSERVE_TEST_LOG", str(tmp_path_factory.mktemp("limited") / "steps.log"))
    app = ls.create_app(
        EchoLLM(spec=ls.OpenAISpec()),
        accelerator="cpu",
        devices=1,
        timeout=20,
        max_payload_size=BODY_LIMIT,
        body_timeout=BODY_BUDGET,
    )
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield server, http


def _chat_body(size: int) -> bytes:
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": ""}]}).encode()
    return body.replace(b'"content": ""', b'"content": "' + b"x" * (size - len(body)) + b'"')


def test_an_oversized_body_is_413_with_openais_error_object(limited_echo):
    server, http = limited_echo
    before = status_count(http, 413)
    r = http.post(CHAT, content=_chat_body(BODY_LIMIT + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and f"the limit is {BODY_LIMIT}" in error["message"]
    assert "x-request-id" in r.headers

    def chunked():  # no Content-Length: counted as it streams in
        body = _chat_body(BODY_LIMIT + 500)
        yield from (body[i : i + 100] for i in range(0, len(body), 100))

    r = http.post(CHAT, content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]
    assert status_count(http, 413) == before + 2  # metrics are labelled by the API's path, /predict
    # a body just at the limit is served
    with pytest.raises(openai.BadRequestError):  # invalid but read: the schema's 400, not a 413
        client(server).chat.completions.create(model="tiny", messages=[{"role": "user"}])
    ok = http.post(CHAT, content=_chat_body(BODY_LIMIT), headers={"content-type": "application/json"})
    assert ok.status_code == 200, ok.text


def test_a_body_not_in_by_the_budget_is_408_and_counted_so(limited_echo):
    server, http = limited_echo
    before = status_count(http, 408)
    head = f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
    with connect(server.port, timeout=BODY_BUDGET + 10) as s:
        s.sendall(head + b'Content-Length: 1000\r\n\r\n{"model": "tiny", "messages": [')
        status, _, body = read_response(s)
    assert status == 408 and b"body did not arrive" in body
    wait_for(lambda: status_count(http, 408) == before + 1)  # a 408, not a client that left
    assert client(server).chat.completions.create(model="tiny", messages=HELLO).choices[0].message.content
