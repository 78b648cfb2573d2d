"""LitServe's ready-made types, served from files written as LitServe's docs write them:
``ls.test_examples`` and ``litserve.schema.image``."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from serving import serve_file

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.slow  # each test serves a LitServe-style script in a subprocess


def test_simple_litapi_squares(tmp_path):
    with serve_file("test_examples_simple.py", tmp_path) as proc:
        r = httpx.post(proc.url + "/predict", json={"input": 4.0}, timeout=30)
        assert r.status_code == 200 and r.json() == {"output": 16.0}


def test_simple_batched_api_answers_each_request_in_a_batch(tmp_path):
    with serve_file("test_examples_batched.py", tmp_path) as proc:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda i: client.post("/predict", json={"input": [i, i + 1]}), range(8)))
        assert [r.status_code for r in results] == [200] * 8
        assert [r.json() for r in results] == [{"output": [i * i, (i + 1) ** 2]} for i in range(8)]


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_image_input_and_output(tmp_path):
    image = Image.new("RGB", (3, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0))
    with serve_file("image_schema.py", tmp_path) as proc:
        r = httpx.post(proc.url + "/predict", json={"image_data": _png(image)}, timeout=30)
        assert r.status_code == 200, r.text
        out = Image.open(io.BytesIO(base64.b64decode(r.json()["image"])))
        assert out.size == (3, 2)
        assert out.convert("RGB").getpixel((2, 0)) == (255, 0, 0)  # flipped left-right
        assert out.convert("RGB").getpixel((0, 0)) == (0, 0, 0)

        missing = httpx.post(proc.url + "/predict", json={"image": "x"}, timeout=30)
        assert missing.status_code == 422 and "image_data" in missing.text


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def test_openai_test_api(tmp_path):
    with serve_file("openai_test_api.py", tmp_path) as proc:
        r = httpx.post(proc.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "This is a generated output"}


def test_openai_tool_calls_example(tmp_path):
    with serve_file("openai_tool_calls.py", tmp_path) as proc:
        r = httpx.post(proc.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 200, r.text
        call = r.json()["choices"][0]["message"]["tool_calls"][0]
        assert call["function"] == {"name": "function_1", "arguments": '{"arg_1": "arg_1_value"}'}


def test_openai_batched_stream_with_context(tmp_path):
    import concurrent.futures

    with serve_file("openai_batch_context.py", tmp_path) as proc:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(
                pool.map(lambda _: httpx.post(proc.url + "/v1/chat/completions", json=CHAT, timeout=30), range(4))
            )
        assert [r.status_code for r in replies] == [200] * 4
        for r in replies:
            assert r.json()["choices"][0]["message"]["content"] == "Hi! It's nice to meet you. "
