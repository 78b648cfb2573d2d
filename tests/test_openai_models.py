"""The OpenAI specs' pure parts: request validation, error objects, chunk folding, SSE, embeddings maths.

No server here: these are the rules a client sees, checked one by one (the end-to-end tests with the
official client are in test_openai_spec.py and test_openai_embedding.py).
"""

from __future__ import annotations

import base64
import json
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from litserve.specs import errors as E
from litserve.specs import sse
from litserve.specs.assembly import Completion, MalformedOutput, to_message
from litserve.specs.chat_models import ChatCompletionRequest
from litserve.specs.openai import ChatMessage
from litserve.specs.openai_embedding import EmbeddingRequest, OpenAIEmbeddingSpec, build_response, shorten, to_base64

USER = [{"role": "user", "content": "hi"}]


def req(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **kw})


def param_of(**kw) -> str | None:
    with pytest.raises(ValidationError) as info:
        req(**kw)
    return E.from_validation(info.value)[1]


# -- request validation ------------------------------------------------------------------------------------
def test_a_full_request_as_the_openai_client_sends_it_validates():
    r = req(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "system", "content": [{"type": "text", "text": "be kind"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        max_tokens=10,
        max_completion_tokens=12,
        temperature=0.2,
        top_p=0.9,
        stop=["\n", "END"],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}},
        user="u1",
        metadata={"team": "a"},
        seed=3,
        top_k=40,  # not OpenAI's, but open-model servers take it: kept for the model's context
    )
    assert r.n == 2 and r.stream and r.stream_options.include_usage
    assert r.response_format.json_schema.schema_ == {"type": "object"}
    ctx = r.context()
    assert "messages" not in ctx and ctx["top_k"] == 40 and ctx["max_tokens"] == 10
    assert ctx["response_format"]["json_schema"]["schema"] == {"type": "object"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
        ({"messages": [{"role": "user"}]}, "messages.0"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools.0.function.name"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ],
)
def test_a_field_outside_openais_rules_is_named_in_param(fields, param):
    assert param_of(**fields) == param


def test_cross_field_rules_are_openais():
    with pytest.raises(ValidationError, match="stream_options"):
        req(stream_options={"include_usage": True})  # without stream
    with pytest.raises(ValidationError, match="not in 'tools'"):
        req(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice={"function": {"name": "g"}})
    with pytest.raises(ValidationError, match="needs 'tools'"):
        req(tool_choice="required")


def test_litserve_spellings_still_validate():
    r = req(model="", tool_choice="any", tools=[{"type": "function", "function": {"name": "f"}}])
    assert r.tool_choice.value == "any"
    assert ChatCompletionRequest.model_validate({"messages": USER}).model == ""  # model may be omitted
    image = {"role": "user", "content": [{"type": "image_url", "image_url": "https://x/y.png"}]}
    assert req(messages=[image]).messages[0].content[0].image_url == "https://x/y.png"


# -- error objects -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (404, "not_found_error"), (500, "server_error")],
)
def test_error_object_has_openais_four_fields(status, kind):
    body = json.loads(E.error_json(status, "nope", param="p", code="c"))
    assert body == {"error": {"message": "nope", "type": kind, "param": "p", "code": "c"}}


def test_litserve_error_bodies_are_reshaped_and_openai_ones_kept():
    assert json.loads(E.from_litserve_body(500, b'{"detail": "ValueError: boom"}'))["error"]["message"] == (
        "ValueError: boom"
    )
    reshaped = json.loads(E.from_litserve_body(422, b'{"detail": [{"loc": ["body", "messages", 0], "msg": "bad"}]}'))
    assert reshaped["error"]["param"] == "messages.0" and reshaped["error"]["type"] == "invalid_request_error"
    own = E.error_json(404, "gone", code="model_not_found")
    assert E.from_litserve_body(404, own) == own
    assert json.loads(E.from_litserve_body(503, b""))["error"]["message"]  # empty body: a default message


# -- what predict yields -----------------------------------------------------------------------------------
def test_outputs_become_message_dicts_as_in_litserve():
    assert to_message("hi") == {"role": "assistant", "content": "hi"}
    assert to_message({"content": "x", "prompt_tokens": 3}) == {"role": "assistant", "content": "x", "prompt_tokens": 3}
    assert to_message(ChatMessage(role="assistant", content="m")) == {"role": "assistant", "content": "m"}
    assert to_message([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])["content"] == "a"
    assert to_message(None) == {"role": "assistant", "content": None}
    with pytest.raises(MalformedOutput, match="Malformed output"):
        to_message(42)


def chunk(**message) -> bytes:
    return json.dumps(message).encode()


def test_a_completion_joins_content_and_sums_usage_over_chunks_and_choices():
    c = Completion("chatcmpl-1", "m", 2)
    for i in range(2):
        c.choices[i].add(chunk(role="assistant", content="Hello"))
        c.choices[i].add(chunk(content=" world", completion_tokens=1))
        c.choices[i].add(chunk(content="", prompt_tokens=5, completion_tokens=1))
    body = json.loads(c.response())
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-1" and body["model"] == "m"
    assert [ch["message"]["content"] for ch in body["choices"]] == ["Hello world"] * 2
    assert [ch["finish_reason"] for ch in body["choices"]] == ["stop", "stop"]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_stream_chunks_announce_the_role_once_and_finish_with_the_reason():
    c = Completion("chatcmpl-2", "m", 1)
    first = c.choices[0].add(chunk(content="a"))
    second = c.choices[0].add(chunk(content="b"))
    only_usage = c.choices[0].add(chunk(content="", completion_tokens=2, finish_reason="length"))
    assert first == {"role": "assistant", "content": "a"} and second == {"content": "b"} and only_usage is None
    event = json.loads(c.chunk(0, second))
    assert event["object"] == "chat.completion.chunk" and event["choices"][0]["delta"] == {"content": "b"}
    assert event["usage"] is None
    assert json.loads(c.finish_chunk(0))["choices"][0]["finish_reason"] == "length"
    usage = json.loads(c.usage_chunk())
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2


def test_tool_calls_are_collected_and_fragments_extend_their_call():
    c = Completion("chatcmpl-3", "m", 1)
    call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}
    c.choices[0].add(chunk(content=None, tool_calls=[call]))
    c.choices[0].add(chunk(content=None, tool_calls=[{"index": 0, "function": {"arguments": " 1}"}}]))
    message = json.loads(c.response())["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] is None
    assert message["message"]["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]


@given(st.lists(st.tuples(st.text(max_size=5), st.integers(0, 50), st.integers(0, 50)), max_size=20))
def test_folding_any_chunk_sequence_keeps_text_and_token_sums(parts):
    c = Completion("chatcmpl-p", "m", 1)
    for text, p, k in parts:
        c.choices[0].add(chunk(content=text, prompt_tokens=p, completion_tokens=k))
    body = json.loads(c.response())
    assert body["choices"][0]["message"]["content"] == "".join(t for t, _, _ in parts)
    usage = body["usage"]
    assert usage["prompt_tokens"] == sum(p for _, p, _ in parts)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


# -- SSE ---------------------------------------------------------------------------------------------------
def test_sse_events_round_trip_and_done_ends_the_stream():
    body = (sse.event(b'{"a":1}') + b": keep-alive\n\n" + sse.event(b'{"b":2}') + sse.DONE).decode()
    assert sse.parse(body) == ['{"a":1}', '{"b":2}', "[DONE]"]
    assert sse.parse("data: x\ndata: y\r\n\r\n") == ["x\ny"]  # multi-line data joins with newlines


# -- embeddings --------------------------------------------------------------------------------------------
def test_embedding_request_accepts_openais_input_shapes():
    assert EmbeddingRequest(input="a").ensure_list() == ["a"]
    assert EmbeddingRequest(input=["a", "b"]).ensure_list() == ["a", "b"]
    assert EmbeddingRequest(input=[1, 2, 3]).ensure_list() == [[1, 2, 3]]  # one tokenised input
    assert EmbeddingRequest(input=[[1], [2]]).ensure_list() == [[1], [2]]
    for bad in ("", [], [""], {"x": 1}):
        with pytest.raises(ValidationError):
            EmbeddingRequest(input=bad)
    with pytest.raises(ValidationError):
        EmbeddingRequest(input="a", encoding_format="int8")


def test_base64_is_little_endian_float32_as_the_openai_client_decodes_it():
    vector = [0.5, -1.25, 3.0]
    raw = base64.b64decode(to_base64(vector))
    assert list(struct.unpack("<3f", raw)) == vector


def test_dimensions_shortens_and_renormalises_unit_vectors():
    unit = [0.6, 0.8, 0.0, 0.0]
    short = shorten(unit, 1)
    assert short == [1.0]
    assert shorten([3.0, 4.0, 5.0], 2) == [3.0, 4.0]  # not unit length: only cut
    assert math.isclose(sum(x * x for x in shorten([0.5, 0.5, 0.5, 0.5], 3)), 1.0)


def test_embedding_response_shape_and_errors():
    request = EmbeddingRequest(input=["a", "b"], model="e", encoding_format="float", dimensions=1)
    body = json.loads(build_response(request, b'{"embeddings": [[1.0, 0.0], [0.0, 1.0]], "prompt_tokens": 4}', "e"))
    assert body["object"] == "list" and body["model"] == "e"
    assert [d["index"] for d in body["data"]] == [0, 1] and body["data"][0]["embedding"] == [1.0]
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    with pytest.raises(Exception, match="one vector per input"):
        build_response(request, b'{"embeddings": [[1.0]]}', "e")


def test_embedding_batch_concatenates_requests_and_unbatch_splits_them_back():
    spec = OpenAIEmbeddingSpec()
    flat = spec.batch([["a", "b"], ["c"], ["d", "e", "f"]])
    assert flat == ["a", "b", "c", "d", "e", "f"]
    assert spec.unbatch([[i] for i in range(6)]) == [[[0], [1]], [[2]], [[3], [4], [5]]]
    with pytest.raises(ValueError, match="5 vectors for 6 inputs"):
        spec.unbatch([[i] for i in range(5)])
