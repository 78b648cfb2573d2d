"""LitServe's OpenAI example APIs (``litserve.test_examples.openai_spec_example`` and
``openai_embedding_spec_example``) served as LitServe serves them, checked with the ``openai`` client."""

from __future__ import annotations

import json

import openai
import pytest
from support.servers import ThreadServer

import litserve as ls
from litserve.test_examples import openai_embedding_spec_example as E
from litserve.test_examples import openai_spec_example as X

pytestmark = pytest.mark.slow  # one server per API
HI = [{"role": "user", "content": "Hello"}]


def serve(api, spec=None, **kw):
    spec = spec or ls.OpenAISpec()
    with pytest.warns(DeprecationWarning, match="spec= on the server"):  # LitServe's spelling, as LitServe warns
        server = ls.LitServer(api, spec=spec, accelerator="cpu", devices=1, timeout=20, **kw)
    return ThreadServer(server.app)


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.mark.parametrize(
    ("api", "content"),
    [
        (X.TestAPI(), "This is a generated output"),
        (X.TestAPIWithCustomEncode(), "This is a custom encoded output"),
        (
            X.TestAPIWithStructuredOutput(),
            json.dumps({"name": "Science Fair", "date": "Friday", "participants": ["Alice", "Bob"]}),
        ),
        (X.OpenAIWithUsageEncodeResponse(), "10 + 6 is equal to 16."),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else "",
)
def test_chat_examples(api, content):
    with serve(api) as server:
        r = client(server).chat.completions.create(model="m", messages=HI)
        assert r.choices[0].message.content == content
        streamed = client(server).chat.completions.create(model="m", messages=HI, stream=True)
        assert "".join(c.delta.content or "" for ch in streamed for c in ch.choices) == content


def test_usage_and_tool_call_examples():
    with serve(X.OpenAIWithUsage()) as server:
        usage = client(server).chat.completions.create(model="m", messages=HI).usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (25, 10, 35)
    with serve(X.TestAPIWithToolCalls()) as server:
        call = client(server).chat.completions.create(model="m", messages=HI).choices[0].message.tool_calls[0]
        assert (call.function.name, json.loads(call.function.arguments)) == ("function_1", {"arg_1": "arg_1_value"})


def test_batched_examples_with_context_and_usage():
    api = X.OpenAIBatchContext(stream=True, max_batch_size=2, batch_timeout=0.5)
    with serve(api) as server:
        text = client(server).chat.completions.create(model="m", messages=HI).choices[0].message.content
        assert text == "Hi! It's nice to meet you. "
    api = X.OpenAIBatchingWithUsage(stream=True, max_batch_size=2, batch_timeout=0.5)
    with serve(api) as server:
        r = client(server).chat.completions.create(model="m", messages=HI)
        assert r.choices[0].message.content == "10 + 6 is equal to 16." and r.usage.total_tokens == 35


def test_embedding_examples():
    with serve(E.TestEmbedAPIWithUsage(), spec=ls.OpenAIEmbeddingSpec()) as server:
        r = client(server).embeddings.create(model="m", input=["a", "b"], encoding_format="float")
        assert [len(d.embedding) for d in r.data] == [768, 768] and r.usage.prompt_tokens == 10
    with serve(E.TestEmbedAPIWithMissingEmbeddings(), spec=ls.OpenAIEmbeddingSpec()) as server:
        with pytest.raises(openai.InternalServerError, match="embeddings"):
            client(server).embeddings.create(model="m", input="a")
    for bad in (E.TestEmbedAPIWithYieldPredict(), E.TestEmbedAPIWithYieldEncodeResponse()):
        with pytest.raises(ls.ConfigurationError, match="not yield"), pytest.warns(DeprecationWarning):
            ls.LitServer(bad, spec=ls.OpenAIEmbeddingSpec(), accelerator="cpu", devices=1)
