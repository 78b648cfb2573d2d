"""Batching, through real HTTP and a real spawned worker: what the worker's predict saw, and what each
client got back.

To put an exact set of requests in one batch, a test first occupies the single worker with a
blocking request, queues its requests (polling /info until they are all waiting), then releases the
blocker: the queued requests go out together as the next batch.
"""

from __future__ import annotations

import importlib.util
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from apis_stream import ArrayBatchAPI, BatchAPI, read_log
from support.http import post_raw
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls

HAS_TORCH = importlib.util.find_spec("torch") is not None
NO_TORCH = "torch is not installed (see the README to install it)"


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("batching") / "predict.log"
    api = BatchAPI(log=str(log), max_batch_size=4, batch_timeout=0.2)
    app = ls.create_app(api, accelerator="cpu", devices=1, timeout=20)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        client.log = log
        yield client


class Blocker:
    """Occupies the server's only worker until ``release()``; its own response is collected by ``wait()``."""

    def __init__(self, client: httpx.Client, pool: ThreadPoolExecutor, tmp: Path) -> None:
        self.gate = tmp / f"gate-{uuid.uuid4().hex}"
        self.client = client
        self.future = pool.submit(
            client.post, "/predict", json={"op": "block", "path": str(self.gate), "tag": "blocker"}
        )
        wait_for(lambda: Path(str(self.gate) + ".started").exists() or self.future.done())
        assert not self.future.done(), self.future.result().text

    def release(self) -> None:
        self.gate.touch()

    def wait(self) -> httpx.Response:
        return self.future.result(timeout=30)


def queued(client: httpx.Client) -> int:
    return client.get("/info").json()["queued"]


def accepted(client: httpx.Client) -> int:
    """Requests accepted and not yet answered: queued in the app or held by the worker."""
    return client.get("/info").json()["in_flight"]


def run_as_one_batch(client: httpx.Client, bodies: list[dict], tmp: Path) -> list[httpx.Response]:
    """Send ``bodies`` concurrently while the worker is blocked, so they are dispatched as one batch."""
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        blocker = Blocker(client, pool, tmp)
        futures = []
        for body in bodies:  # one at a time, so request i is the i-th in the queue
            futures.append(pool.submit(client.post, "/predict", json=body))
            n = len(futures) + 1  # with the blocker
            wait_for(lambda n=n: accepted(client) == n)
        blocker.release()
        assert blocker.wait().status_code == 200
        return [f.result(timeout=30) for f in futures]


def batches_containing(log: Path, tag: object) -> list[list]:
    return [rec["batch"] for rec in read_log(log) if tag in rec["batch"]]


def test_concurrent_requests_are_batched(batch_server):
    """Eight requests sent at once: the worker sees batches of more than one, each at most 4."""
    base = 1000
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: batch_server.post("/predict", json={"x": base + i}), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    sizes = [r.json()["batch_size"] for r in responses]
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 4, sizes
    seen = [
        rec["batch"]
        for rec in read_log(batch_server.log)
        if any(isinstance(t, int) and t >= base and t < base + 8 for t in rec["batch"])
    ]
    assert sorted(t for b in seen for t in b) == list(range(base, base + 8))
    assert all(1 <= len(b) <= 4 for b in seen) and any(len(b) > 1 for b in seen)


def test_each_request_gets_its_own_response_in_batch_order(batch_server, tmp_path):
    xs = [7, 3, 11, 5]
    responses = run_as_one_batch(batch_server, [{"x": x} for x in xs], tmp_path)
    assert [r.status_code for r in responses] == [200] * 4
    bodies = [r.json() for r in responses]
    assert [b["x"] for b in bodies] == xs
    assert [b["y"] for b in bodies] == [x * x for x in xs]
    assert [b["batch_size"] for b in bodies] == [4, 4, 4, 4]
    assert batches_containing(batch_server.log, 7)[-1] == xs  # the batch held the requests in arrival order
    assert all(r.headers["content-type"] == "application/json" for r in responses)
    assert len({r.headers["x-request-id"] for r in responses}) == 4


def test_a_batch_never_exceeds_max_batch_size(batch_server, tmp_path):
    xs = list(range(20, 26))  # six queued requests, max_batch_size=4: a batch of 4, then one of 2
    responses = run_as_one_batch(batch_server, [{"x": x} for x in xs], tmp_path)
    assert [r.json()["y"] for r in responses] == [x * x for x in xs]
    assert [r.json()["batch_size"] for r in responses] == [4, 4, 4, 4, 2, 2]
    assert batches_containing(batch_server.log, 20)[-1] == [20, 21, 22, 23]
    assert batches_containing(batch_server.log, 24)[-1] == [24, 25]


def test_exception_in_predict_fails_every_request_of_the_batch_and_the_worker_lives(batch_server, tmp_path):
    responses = run_as_one_batch(batch_server, [{"x": 40}, {"op": "raise", "tag": "bad"}, {"x": 41}], tmp_path)
    assert [r.status_code for r in responses] == [500, 500, 500]
    assert all(r.json() == {"detail": "ValueError: the model refused this batch"} for r in responses)
    assert batches_containing(batch_server.log, "bad")[-1] == [40, "bad", 41]
    pid = batch_server.get("/info").json()["workers"][0]["pid"]
    after = batch_server.post("/predict", json={"x": 9})
    assert after.status_code == 200 and after.json()["y"] == 81 and after.json()["pid"] == pid


def test_unbatch_returning_the_wrong_count_is_500_with_a_clear_message(batch_server, tmp_path):
    responses = run_as_one_batch(batch_server, [{"x": 50}, {"op": "short", "tag": "short"}], tmp_path)
    assert [r.status_code for r in responses] == [500, 500]
    for r in responses:
        assert r.json() == {"detail": "RuntimeError: unbatch() returned 1 outputs for a batch of 2 requests"}
    assert batch_server.post("/predict", json={"x": 3}).json()["y"] == 9


def test_batch_window_dispatches_a_lone_request(batch_server):
    """A request alone in the queue is sent when its batch_timeout window closes, as a batch of one."""
    r = batch_server.post("/predict", json={"x": 12})
    assert r.status_code == 200
    assert r.json() == {"x": 12, "y": 144, "batch_size": 1, "pid": r.json()["pid"]}


# -- timed-out and disconnected requests never reach predict ------------------------------------------------
@pytest.fixture(scope="module")
def short_timeout_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("batching-timeout") / "predict.log"
    api = BatchAPI(log=str(log), max_batch_size=4, batch_timeout=0.05)
    app = ls.create_app(api, accelerator="cpu", devices=1, timeout=1.0)
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        client.log = log
        client.port = server.port
        yield client


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def test_timed_out_or_disconnected_requests_are_never_batched(short_timeout_server, tmp_path):
    client = short_timeout_server
    with ThreadPoolExecutor(3) as pool:
        blocker = Blocker(client, pool, tmp_path)
        timed_out = pool.submit(client.post, "/predict", json={"tag": "timed-out", "x": 1})
        wait_for(lambda: queued(client) == 1)
        left = post_raw(client.port, {"tag": "left", "x": 2})
        wait_for(lambda: queued(client) == 2)
        disconnects = _metric(client, 'litserve_disconnects_total{route="/predict"}')
        left.close()
        wait_for(lambda: _metric(client, 'litserve_disconnects_total{route="/predict"}') > disconnects)
        r = timed_out.result(timeout=30)  # answered while the worker is still blocked
        assert r.status_code == 504
        assert "did not complete within 1.0s" in r.json()["detail"]
        assert queued(client) == 0  # both were dropped from the queue
        blocker.release()
        blocker.wait()  # the blocker timed out too; its batch still ran to the end in the worker
    after = client.post("/predict", json={"tag": "after", "x": 3})
    assert after.status_code == 200 and after.json()["batch_size"] == 1
    tags = [t for rec in read_log(client.log) for t in rec["batch"]]
    assert "blocker" in tags and "after" in tags
    assert "timed-out" not in tags and "left" not in tags


# -- the default batch() --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def array_server():
    app = ls.create_app(ArrayBatchAPI(max_batch_size=3, batch_timeout=0.05), accelerator="cpu", devices=1)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize(
    "kind, expected",
    [
        pytest.param(
            "torch", "torch.Tensor", marks=[pytest.mark.slow, pytest.mark.skipif(not HAS_TORCH, reason=NO_TORCH)]
        ),
        ("numpy", "numpy.ndarray"),
        ("list", "builtins.list"),
    ],
)
def test_default_batch_stacks_tensors_and_arrays_else_lists(array_server, kind, expected):
    rows = [[1, 2], [3, 4], [5, 6]]
    with ThreadPoolExecutor(3) as pool:
        futures = []
        for row in rows:  # three requests in the same batch window: one batch of 3
            futures.append(pool.submit(array_server.post, "/predict", json={"kind": kind, "x": row}))
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 3
    bodies = [r.json() for r in responses]
    assert {b["batched_as"] for b in bodies} == {expected}
    sizes = {tuple(b["shape"]) for b in bodies}
    if kind == "list":
        assert all(s[0] in (1, 2, 3) for s in sizes)
    else:
        assert all(s[1:] == (2,) for s in sizes)  # stacked: (batch, 2)
    assert [b["sum"] for b in bodies] == [3, 7, 11]


@pytest.mark.slow
def test_default_batch_unit():
    import numpy

    torch = pytest.importorskip("torch", reason=NO_TORCH)

    api = ls.LitAPI()
    t = api.batch([torch.ones(2), torch.zeros(2)])
    assert isinstance(t, torch.Tensor) and t.shape == (2, 2)
    a = api.batch([numpy.ones(3), numpy.zeros(3)])
    assert isinstance(a, numpy.ndarray) and a.shape == (2, 3)
    assert api.batch([{"a": 1}, {"a": 2}]) == [{"a": 1}, {"a": 2}]
    assert api.unbatch(t) and len(api.unbatch(t)) == 2
