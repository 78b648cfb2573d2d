"""Batched streaming through real HTTP and a real worker: one generator for a batch of streams, a
request that leaves dropping out of it, and continuous batching, where a request joins a running
batch at its next step. What the worker did is read from the API's log."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from apis_batched_stream import BatchChat, BatchStreamAPI, StepChat, StepLLM, read_log
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls


def tag() -> str:
    return uuid.uuid4().hex[:8]


def stream_lines(url: str, body: dict, out: list, stop_after: int | None = None) -> None:
    """POST a streaming request and collect its NDJSON lines (leaving after ``stop_after`` of them)."""
    with httpx.Client(timeout=30) as http, http.stream("POST", url + "/predict", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                out.append(json.loads(line))
            if stop_after is not None and len(out) >= stop_after:
                return


def run_all(targets: list[tuple]) -> None:
    threads = [threading.Thread(target=stream_lines, args=args) for args in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()


# -- a generator over the batch ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("bstream") / "log"
    api = BatchStreamAPI(log=str(log), max_batch_size=4, batch_timeout=2.0)
    with ThreadServer(ls.create_app(api, accelerator="cpu", devices=1, timeout=20)) as server:
        server.log = log
        yield server


def test_one_predict_streams_to_every_request_of_its_batch_in_order(batch_server):
    tags = [tag() for _ in range(4)]
    outs: list[list] = [[] for _ in tags]
    run_all([(batch_server.url, {"tag": t, "n": i + 2}, outs[i]) for i, t in enumerate(tags)])
    for i, t in enumerate(tags):
        assert outs[i] == [{"out": f"{t}:{k}"} for k in range(i + 2)]  # a request's own chunks, in order
    batches = [rec["batch"] for rec in read_log(batch_server.log) if "batch" in rec]
    assert sorted(tags) in [sorted(b) for b in batches]  # all four in one predict call


def test_a_request_that_leaves_drops_out_and_the_rest_finish(batch_server):
    tags = [tag() for _ in range(4)]
    outs: list[list] = [[] for _ in tags]
    body = [{"tag": t, "n": 30, "delay": 0.02} for t in tags]
    rest = [(batch_server.url, b, o) for b, o in zip(body[1:], outs[1:], strict=True)]
    run_all([(batch_server.url, body[0], outs[0], 2), *rest])
    assert outs[0] == [{"out": f"{tags[0]}:0"}, {"out": f"{tags[0]}:1"}]
    for t, out in zip(tags[1:], outs[1:], strict=True):
        assert out == [{"out": f"{t}:{k}"} for k in range(30)]


def test_when_every_request_left_the_generator_is_closed(batch_server):
    # Full batches (max_batch_size requests): none waits out the server's 2 s batch_timeout.
    tags = [tag() for _ in range(4)]
    outs: list[list] = [[] for _ in tags]
    run_all([(batch_server.url, {"tag": t, "n": 10_000, "delay": 0.02}, o, 2) for t, o in zip(tags, outs, strict=True)])
    closed = wait_for(lambda: [r for r in read_log(batch_server.log) if sorted(r.get("closed", [])) == sorted(tags)])
    assert closed[0]["after"] < 10_000
    done: list[list] = [[] for _ in range(4)]
    run_all([(batch_server.url, {"tag": tag(), "n": 1}, out) for out in done])  # the worker is free again
    assert [len(out) for out in done] == [1, 1, 1, 1]


# -- continuous batching -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def step_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("steps") / "log"
    api = StepLLM(log=str(log), max_batch_size=4)
    with ThreadServer(ls.create_app(api, accelerator="cpu", devices=1, timeout=20)) as server:
        server.log = log
        yield server


@pytest.mark.slow
def test_a_request_joins_a_running_batch_at_its_next_step(step_server):
    long, short = tag(), tag()
    long_out: list = []
    short_done = threading.Event()

    def long_client() -> None:  # a stream far longer than the test: it leaves once the short one is done
        body = {"tag": long, "n": 10_000, "delay": 0.02}
        with httpx.Client(timeout=30) as http, http.stream("POST", step_server.url + "/predict", json=body) as r:
            for line in r.iter_lines():
                if line:
                    long_out.append(json.loads(line))
                if short_done.is_set():
                    return

    first = threading.Thread(target=long_client)
    first.start()
    try:
        wait_for(lambda: len(long_out) >= 3)
        short_out: list = []
        stream_lines(step_server.url, {"tag": short, "n": 3}, short_out)
        assert short_out == [f"{short}:{k}" for k in range(3)]
    finally:
        short_done.set()
        first.join(60)
    assert long_out == [f"{long}:{k}" for k in range(len(long_out))]  # its own chunks, in order, none lost
    steps = [rec["step"] for rec in read_log(step_server.log) if "step" in rec]
    assert any(long in s and short in s for s in steps)  # they shared steps
    wait_for(lambda: long in {r.get("leave") for r in read_log(step_server.log)})
    leaves = {r["leave"]: r["at"] for r in read_log(step_server.log) if "leave" in r}
    assert leaves[short] == 3  # the short one ran its 3 steps to the end,
    assert len(long_out) <= leaves[long] < 10_000  # while the long one kept generating until it left


def test_a_client_that_leaves_is_removed_from_the_batch(step_server):
    gone, stays = tag(), tag()
    gone_out: list = []
    stays_out: list = []
    run_all(
        [
            (step_server.url, {"tag": gone, "n": 10_000, "delay": 0.02}, gone_out, 3),
            (step_server.url, {"tag": stays, "n": 40, "delay": 0.02}, stays_out),
        ]
    )
    assert stays_out == [f"{stays}:{k}" for k in range(40)]
    left = wait_for(lambda: [r for r in read_log(step_server.log) if r.get("leave") == gone])
    assert left[0]["at"] < 10_000
    later = [r["step"] for r in read_log(step_server.log) if "step" in r]
    last_with_gone = max(i for i, s in enumerate(later) if gone in s)
    assert all(gone not in s for s in later[last_with_gone + 1 :])


def test_step_api_configuration_errors():
    class NoJoin(ls.LitAPI):
        def step(self, states):
            return [None for _ in states]

    with pytest.raises(ls.ConfigurationError, match="join"):
        ls.create_app(NoJoin(stream=True, max_batch_size=2), accelerator="cpu")
    with pytest.raises(ls.ConfigurationError, match="stream=True and max_batch_size > 1"):
        ls.create_app(StepLLM(log="", max_batch_size=1), accelerator="cpu")


# -- the OpenAI spec on both -----------------------------------------------------------------------------------
@pytest.mark.parametrize("api_class", [BatchChat, StepChat])
def test_sixteen_openai_streams_on_a_batched_model(api_class):
    api = api_class(spec=ls.OpenAISpec(), stream=True, max_batch_size=8, batch_timeout=0.05)
    texts = [" ".join(f"w{i}x{k}" for k in range(i % 5 + 1)) for i in range(16)]
    with ThreadServer(ls.create_app(api, accelerator="cpu", devices=1, timeout=20)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)

        def chat(text: str) -> tuple[str, str]:
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": text}], stream=True
            )
            parts, reason = [], None
            for chunk in stream:
                for c in chunk.choices:
                    parts.append(c.delta.content or "")
                    reason = c.finish_reason or reason
            return "".join(parts), reason

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(chat, texts))
        whole = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a b c"}])
    assert results == [(t, "stop") for t in texts]
    assert whole.choices[0].message.content == "a b c"
