"""``OpenAIEmbeddingSpec`` end to end with the official ``openai`` client: string and list input, both
encodings, ``dimensions``, usage, errors, and requests batched together into one ``predict`` call."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from apis_openai import CountingEmbedder, HashEmbedder, embed
from support.servers import ThreadServer

import litserve as ls


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def batched(tmp_path_factory, monkeypatch_module):
    log = tmp_path_factory.mktemp("embed") / "predict.log"
    monkeypatch_module.setenv("LITSERVE_TEST_LOG", str(log))
    api = HashEmbedder(spec=ls.OpenAIEmbeddingSpec(), max_batch_size=4, batch_timeout=2.0)
    with ThreadServer(ls.create_app(api, accelerator="cpu", devices=1, timeout=20)) as server:
        server.log = log
        yield server


@pytest.fixture(scope="module")
def plain():
    api = HashEmbedder(spec=ls.OpenAIEmbeddingSpec())
    with ThreadServer(ls.create_app(api, accelerator="cpu", devices=1, timeout=20)) as server:
        yield server


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def close(a, b) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6) for x, y in zip(a, b, strict=True))


def test_four_concurrent_requests_are_embedded_in_one_predict_call(batched):
    texts = [[f"r{i}-a", f"r{i}-b"] for i in range(4)]  # four requests of two inputs: a full batch
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: client(batched).embeddings.create(model="e", input=t), texts))
    for t, r in zip(texts, results, strict=True):
        assert [d.index for d in r.data] == [0, 1]
        assert all(close(d.embedding, embed(x)) for d, x in zip(r.data, t, strict=True))  # base64 by default
    calls = [json.loads(line)["predict"] for line in batched.log.read_text().splitlines()]
    assert sorted(x for t in texts for x in t) in [sorted(c) for c in calls]


def test_float_encoding_string_input_and_dimensions(plain):
    with httpx.Client(base_url=plain.url, timeout=30) as http:
        body = http.post("/v1/embeddings", json={"model": "e", "input": "one", "encoding_format": "float"}).json()
        assert body["object"] == "list" and body["model"] == "e"
        assert body["data"][0]["object"] == "embedding" and close(body["data"][0]["embedding"], embed("one"))
        assert body["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    r = client(plain).embeddings.create(model="e", input="one", dimensions=3, encoding_format="float")
    assert len(r.data[0].embedding) == 3 and math.isclose(sum(x * x for x in r.data[0].embedding), 1.0)
    with pytest.raises(openai.BadRequestError) as info:
        client(plain).embeddings.create(model="e", input="one", dimensions=9)
    assert info.value.body["param"] == "dimensions"


def test_invalid_input_is_400_naming_the_field(plain):
    with pytest.raises(openai.BadRequestError) as info:
        client(plain).embeddings.create(model="e", input=[])
    assert info.value.body["param"] == "input" and info.value.body["type"] == "invalid_request_error"


def test_usage_from_encode_response_and_models_route():
    spec = ls.OpenAIEmbeddingSpec(model_name="hash-8")
    with ThreadServer(ls.create_app(CountingEmbedder(spec=spec), accelerator="cpu", devices=1, timeout=20)) as s:
        check_usage_and_models(s)


def check_usage_and_models(server):
    r = client(server).embeddings.create(model="hash-8", input=["a", "b"], encoding_format="float")
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (7, 7)
    assert [m.id for m in client(server).models.list()] == ["hash-8"]
    with pytest.raises(openai.NotFoundError):
        client(server).embeddings.create(model="other", input="a")


def test_a_generator_predict_is_refused():
    class Streams(ls.LitAPI):
        def predict(self, x):
            yield x

    with pytest.raises(ls.ConfigurationError, match="return, not yield"):
        ls.create_app(Streams(spec=ls.OpenAIEmbeddingSpec()), accelerator="cpu", devices=1)
