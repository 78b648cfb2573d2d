"""``async def predict`` through real HTTP and a real spawned worker: requests run concurrently up to
``max_concurrency`` in one worker, async generators stream, and a client that leaves cancels its task.

Concurrency is proven inside the worker: requests wait on a barrier that only opens when n of them are
in flight at once, and the worker records the most it ever had in flight.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from apis_stream import AsyncAPI, AsyncStreamAPI, read_log
from support.http import post_raw
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls


def tag() -> str:
    return uuid.uuid4().hex[:12]


def events(log: Path, t: str) -> list[dict]:
    return [{k: v for k, v in rec.items() if k != "tag"} for rec in read_log(log) if rec.get("tag") == t]


def in_flight(client: httpx.Client) -> int:
    return client.get("/info").json()["in_flight"]


@pytest.fixture(scope="module")
def async_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("async") / "async.log"
    app = ls.create_app(AsyncAPI(log=str(log), max_concurrency=4), accelerator="cpu", devices=1, timeout=20)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        client.log = log
        yield client


def test_four_requests_run_at_once_in_one_worker(async_server):
    name = tag()
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: async_server.post("/predict", json={"barrier": name, "n": 4}), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    bodies = [r.json() for r in responses]
    assert all(b["passed"] for b in bodies), bodies  # only possible if all four were in flight together
    assert len({b["pid"] for b in bodies}) == 1
    assert async_server.get("/info").json()["workers"][0]["pid"] == bodies[0]["pid"]


def test_concurrency_is_capped_at_max_concurrency(async_server):
    """Eight at once: they pass the barrier of four in two groups, and never more than four run together."""
    name = tag()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: async_server.post("/predict", json={"barrier": name, "n": 4}), range(8)))
    bodies = [r.json() for r in responses]
    assert all(b["passed"] for b in bodies), bodies
    assert max(b["max_in_flight"] for b in bodies) == 4


def test_async_exception_is_500_and_the_worker_lives(async_server):
    r = async_server.post("/predict", json={"op": "raise"})
    assert r.status_code == 500
    assert r.json() == {"detail": "ValueError: async model refused"}
    name = tag()
    with ThreadPoolExecutor(2) as pool:
        ok = list(pool.map(lambda _: async_server.post("/predict", json={"barrier": name, "n": 2}), range(2)))
    assert all(r.json()["passed"] for r in ok)


def test_client_disconnect_cancels_the_task_in_the_worker(async_server, tmp_path):
    t, gate = tag(), tmp_path / "never"
    sock = post_raw(async_server.base_url.port, {"op": "gated", "gate": str(gate), "tag": t})
    wait_for(lambda: {"started": True} in events(async_server.log, t))
    sock.close()  # the client leaves before any response
    wait_for(lambda: {"final": True} in events(async_server.log, t))
    assert events(async_server.log, t) == [{"started": True}, {"cancelled": True}, {"final": True}]
    assert not gate.exists()  # it was cancelled, not released
    wait_for(lambda: in_flight(async_server) == 0)
    name = tag()  # the slot came back: four can still run at once
    with ThreadPoolExecutor(4) as pool:
        ok = list(pool.map(lambda _: async_server.post("/predict", json={"barrier": name, "n": 4}), range(4)))
    assert all(r.json()["passed"] for r in ok)


@pytest.fixture(scope="module")
def short_async_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("async-timeout") / "async.log"
    app = ls.create_app(AsyncAPI(log=str(log), max_concurrency=2), accelerator="cpu", devices=1, timeout=1.0)
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        client.log = log
        yield client


def test_timeout_cancels_the_task_in_the_worker(short_async_server, tmp_path):
    t = tag()
    r = short_async_server.post("/predict", json={"op": "gated", "gate": str(tmp_path / "never"), "tag": t})
    assert r.status_code == 504
    wait_for(lambda: {"final": True} in events(short_async_server.log, t))
    assert events(short_async_server.log, t) == [{"started": True}, {"cancelled": True}, {"final": True}]


# -- async generators ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def async_stream_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("async-stream") / "stream.log"
    api = AsyncStreamAPI(log=str(log), max_concurrency=4)
    app = ls.create_app(api, accelerator="cpu", devices=1, timeout=20)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        client.log = log
        yield client


def test_async_generator_streams_ndjson_in_order(async_stream_server):
    t = tag()
    r = async_stream_server.post("/predict", json={"n": 30, "tag": t})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in r.text.splitlines()] == [{"i": i} for i in range(30)]
    assert events(async_stream_server.log, t)[-1] == {"closed": True}


def test_async_generator_streams_sse(async_stream_server):
    r = async_stream_server.post("/predict", json={"n": 2}, headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"] == "text/event-stream"
    assert r.text == 'data: {"i":0}\n\ndata: {"i":1}\n\n'


def test_async_streams_run_concurrently(async_stream_server):
    name = tag()
    with ThreadPoolExecutor(3) as pool:
        responses = list(
            pool.map(lambda _: async_stream_server.post("/predict", json={"n": 2, "barrier": name, "k": 3}), range(3))
        )
    for r in responses:
        assert [json.loads(line) for line in r.text.splitlines()] == [{"passed": True}, {"i": 0}, {"i": 1}]


def test_async_generator_error_mid_stream(async_stream_server):
    r = async_stream_server.post("/predict", json={"op": "raise_after", "n": 3})
    assert r.status_code == 200
    assert [json.loads(line) for line in r.text.splitlines()] == [
        {"i": 0},
        {"detail": "ValueError: async stream broke"},
    ]


def test_a_stream_that_never_yields_to_the_loop_stops_at_a_disconnect_and_cleans_up(async_stream_server):
    """Its worker reads the CANCEL between two chunks (the loop never gets to); the generator is
    closed, and its ``finally`` runs whole, its own awaits included."""
    t = tag()
    with httpx.Client(base_url=str(async_stream_server.base_url), timeout=30) as own:
        with own.stream("POST", "/predict", json={"op": "blocking", "n": 2000, "tag": t}) as r:
            assert json.loads(next(r.iter_lines())) == {"i": 0}
    wait_for(lambda: {"closed": True} in events(async_stream_server.log, t), timeout=20)
    assert events(async_stream_server.log, t) == [{"cleaned": True}, {"closed": True}]
    wait_for(lambda: in_flight(async_stream_server) == 0)


def test_disconnect_mid_stream_cancels_the_async_generator(async_stream_server, tmp_path):
    t, gate = tag(), tmp_path / "never"
    with httpx.Client(base_url=str(async_stream_server.base_url), timeout=30) as own:
        with own.stream("POST", "/predict", json={"op": "gated", "gate": str(gate), "n": 5, "tag": t}) as r:
            assert json.loads(next(r.iter_lines())) == {"i": 0}
            wait_for(lambda: {"waiting": 1} in events(async_stream_server.log, t))
    wait_for(lambda: {"closed": True} in events(async_stream_server.log, t))
    assert events(async_stream_server.log, t) == [{"chunk": 0}, {"waiting": 1}, {"cancelled": True}, {"closed": True}]
    wait_for(lambda: in_flight(async_stream_server) == 0)
