"""Backpressure, body limits, request ids, health/ready/info truthfulness, metrics (issue 4, items 2-6).

Real uvicorn on a real socket, real spawned workers. Requests that must stay in flight block in the
worker until the test creates a file; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apis_faults import FaultAPI
from support.http import connect, metric, raw_exchange, status_count
from support.poll import wait_for
from support.procs import pid_alive
from support.servers import ThreadServer

import litserve as ls

KEY = "k3y-never-shown-7f3a"
METRICS = (
    "litserve_requests_total",
    "litserve_request_duration_seconds",
    "litserve_queue_wait_seconds",
    "litserve_queue_depth",
    "litserve_requests_in_flight",
    "litserve_timeouts_total",
    "litserve_disconnects_total",
    "litserve_stream_pauses_total",
    "litserve_worker_restarts_total",
    "litserve_batch_size",
)


@contextlib.contextmanager
def blocked_requests(client: httpx.Client, gate: Path, n: int) -> Iterator[list[httpx.Response]]:
    """``n`` requests that block in the worker until ``gate`` exists; the gate opens on exit."""
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        r = client.post("/predict", json={"op": "block", "path": str(gate)})
        with lock:
            responses.append(r)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        yield responses
    finally:
        gate.touch()
        for t in threads:
            t.join(20)


@pytest.fixture(scope="module")
def limited():
    app = ls.create_app(
        FaultAPI(),
        accelerator="cpu",
        devices=1,
        workers_per_device=1,
        timeout=20,
        max_queue_size=2,
        max_payload_size="1KB",
        api_key=KEY,
        shutdown_grace=5,
    )
    with (
        ThreadServer(app) as server,
        httpx.Client(base_url=server.url, timeout=20, headers={"X-API-Key": KEY}) as client,
    ):
        yield app, server, client


# -- backpressure ---------------------------------------------------------------------------------------
def test_full_queue_answers_503_with_retry_after_and_recovers(limited, tmp_path):
    app, server, client = limited
    capacity = client.get("/info").json()["workers"][0]["capacity"]
    before_503 = status_count(client, 503)
    with blocked_requests(client, tmp_path / "gate", capacity + 2) as responses:
        # `capacity` requests are on the worker, 2 wait in the app's queue: it is full.
        wait_for(lambda: metric(client, 'litserve_queue_depth{route="/predict"}') == 2)
        assert metric(client, 'litserve_requests_in_flight{route="/predict"}') == capacity + 2
        info = client.get("/info").json()
        assert info["queued"] == 2 and info["in_flight"] == capacity + 2
        r = client.post("/predict", json={"op": "echo"}, headers={"X-Request-ID": "over-the-top"})
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert "queue is full" in r.json()["detail"]
        assert r.headers["x-request-id"] == "over-the-top"
        assert status_count(client, 503) == before_503 + 1
        assert client.get("/ready").status_code == 200  # full is not unready: the worker is fine
    assert len(responses) == capacity + 2
    assert all(r.status_code == 200 and r.json()["released"] for r in responses)
    assert (
        metric(client, 'litserve_queue_depth{route="/predict"}') == 0
        and metric(client, 'litserve_requests_in_flight{route="/predict"}') == 0
    )
    assert client.post("/predict", json={"op": "echo", "value": 1}).json()["value"] == 1


def test_a_burst_in_one_loop_turn_is_not_refused_while_a_worker_has_room(limited):
    """Regression: requests submitted in the same event-loop turn all sat in the queue until the
    deferred dispatch ran, so the third of a burst got "queue is full" from an idle server. With one
    worker (one run slot) and max_queue_size=2, a burst of 3 fits (1 starts, 2 wait); a 4th does not."""
    import asyncio

    from litserve.errors import ServiceUnavailable

    app, server, client = limited
    assert app.settings.max_queue_size == 2

    async def burst(n: int) -> list[int]:
        calls = []
        for i in range(n):
            try:
                calls.append(app.pool.submit(json.dumps({"op": "echo", "value": i}).encode(), f"burst-{i}".encode()))
            except ServiceUnavailable:
                calls.append(None)
        return [(await c.future)[0] if c is not None else 503 for c in calls]

    assert asyncio.run_coroutine_threadsafe(burst(3), app.pool._loop).result(20) == [200] * 3
    assert asyncio.run_coroutine_threadsafe(burst(4), app.pool._loop).result(20) == [200] * 3 + [503]


# -- body limits ------------------------------------------------------------------------------------------
def _body_of(size: int) -> bytes:
    body = json.dumps({"op": "echo", "value": ""}).encode()
    return json.dumps({"op": "echo", "value": "x" * (size - len(body))}).encode()


def test_body_limit_from_content_length_boundary(limited):
    app, server, client = limited
    assert app.settings.max_payload_size == 1000  # "1KB"
    assert len(_body_of(1000)) == 1000
    assert client.post("/predict", content=_body_of(1000)).status_code == 200
    r = client.post("/predict", content=_body_of(1001))
    assert r.status_code == 413 and "limit is 1000" in r.json()["detail"]


def test_body_limit_counts_a_chunked_body_as_it_is_read(limited):
    app, server, client = limited

    def chunks(body: bytes) -> Iterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    assert client.post("/predict", content=chunks(_body_of(1000))).status_code == 200
    assert client.post("/predict", content=chunks(_body_of(1001))).status_code == 413
    # Over the limit mid-body: 413 without waiting for the rest (the body is never finished here).
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-API-Key: "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    status, headers, body = raw_exchange(server.port, head + chunk + chunk)
    assert status == 413 and b"exceeds the limit" in body
    # A whole chunked body over the limit, arriving in one piece, is refused too.
    big = b'{"op": "echo", "value": "' + b"x" * 1100 + b'"}'
    status, headers, body = raw_exchange(server.port, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
    assert status == 413 and b"exceeds the limit" in body


def test_body_limit_rejects_a_declared_size_before_reading(limited):
    app, server, client = limited
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\nX-API-Key: " + KEY.encode() + b"\r\n\r\n"
    )
    status, headers, body = raw_exchange(server.port, head)  # not one byte of the body sent
    assert status == 413 and b"1000000000" in body


def test_payload_size_accepts_int_and_string():
    api = FaultAPI()
    assert ls.create_app(api, accelerator="cpu", max_payload_size=1234).settings.max_payload_size == 1234
    assert ls.create_app(api, accelerator="cpu", max_payload_size="10MB").settings.max_payload_size == 10**7
    assert ls.create_app(api, accelerator="cpu", max_payload_size="1MiB").settings.max_payload_size == 2**20
    for bad in ("ten", 0, "-1MB", True):
        with pytest.raises(ls.ConfigurationError):
            ls.create_app(api, accelerator="cpu", max_payload_size=bad)


# -- request ids ------------------------------------------------------------------------------------------
def test_request_id_accepted_echoed_and_seen_by_the_hooks(limited):
    app, server, client = limited
    for rid in ("abc-123", "a" * 128, "trace/A.b_c:d+e=f"):
        r = client.post("/predict", json={"op": "echo"}, headers={"X-Request-ID": rid})
        assert r.headers["x-request-id"] == rid
        assert r.json()["request_id"] == rid  # litserve.request_id() inside predict


@pytest.mark.parametrize("bad", ["a" * 129, "has spaces", 'quote"d', "semi;colon", "ünïcode".encode().hex() + "é"])
def test_request_id_out_of_bounds_is_replaced(limited, bad):
    app, server, client = limited
    r = client.post("/predict", json={"op": "echo"}, headers={"X-Request-ID": bad.encode("utf-8")})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert rid != bad and re.fullmatch(r"[A-Za-z0-9._:/+=-]{16,128}", rid)  # generated, in the accepted set
    assert r.json()["request_id"] == rid


def test_request_id_generated_unique_and_on_every_error(limited):
    app, server, client = limited
    ids = {client.post("/predict", json={"op": "echo"}).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20
    cases = [
        (client.post("/predict", json={"op": "raise"}, headers={"X-Request-ID": "e-500"}), 500),
        (client.post("/predict", json={"op": "http", "status": 418}, headers={"X-Request-ID": "e-418"}), 418),
        (client.post("/predict", content=b"{nope", headers={"X-Request-ID": "e-400"}), 400),
        (client.post("/predict", content=_body_of(5000), headers={"X-Request-ID": "e-413"}), 413),
        (httpx.post(f"{server.url}/predict", json={}, headers={"X-Request-ID": "e-401"}), 401),
    ]
    for r, status in cases:
        assert r.status_code == status
        assert r.headers["x-request-id"] == f"e-{status}"
        assert "detail" in r.json()


# -- health, ready, info ------------------------------------------------------------------------------------
def test_health_ready_exempt_from_the_key_info_is_not_and_never_shows_it(limited):
    app, server, client = limited
    bare = httpx.Client(base_url=server.url, timeout=10)
    with bare:
        assert bare.get("/health").status_code == 200 and bare.get("/health").text == "ok"
        r = bare.get("/ready")
        assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["workers_ready"] == 1
        assert bare.post("/predict", json={"op": "echo"}).status_code == 401
        assert bare.get("/info").status_code == 401
        assert bare.get("/info", headers={"X-API-Key": KEY + "x"}).status_code == 401
    r = client.get("/info")
    assert r.status_code == 200
    everything = r.text + client.get("/metrics").text + client.get("/openapi.json").text
    assert KEY not in everything
    info = r.json()
    assert info["state"] == "running"
    assert info["settings"]["auth"] is True and info["settings"]["devices"] == ["cpu"]
    assert info["settings"]["max_queue_size"] == 2 and info["settings"]["max_payload_size"] == 1000
    [worker] = info["workers"]
    assert worker["device"] == "cpu" and worker["state"] == "ready" and pid_alive(worker["pid"])
    # The pid /info shows is the process that serves.
    assert client.post("/predict", json={"op": "echo"}).json()["pid"] == worker["pid"]


def test_ready_turns_503_with_a_reason_when_draining_while_health_stays_200(tmp_path):
    app = ls.create_app(FaultAPI(), accelerator="cpu", devices=1, timeout=20, shutdown_grace=5)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        assert client.get("/ready").status_code == 200
        with blocked_requests(client, tmp_path / "gate", 1) as responses:
            wait_for((tmp_path / "gate.started").exists)
            app.drain()
            r = client.get("/ready")
            assert r.status_code == 503 and r.json() == {"status": "not ready", "reason": "draining"}
            assert client.get("/health").status_code == 200
            r = client.post("/predict", json={"op": "echo"})
            assert r.status_code == 503 and "draining" in r.json()["detail"] and r.headers["retry-after"]
        assert [r.status_code for r in responses] == [200]  # the one in flight still finished


# -- metrics ------------------------------------------------------------------------------------------------
def test_metrics_names_and_counts_move(limited, tmp_path):
    app, server, client = limited
    client.post("/predict", json={"op": "echo"})
    text = client.get("/metrics").text
    for name in METRICS:
        assert re.search(rf"^{name}[ {{_]", text, re.M), name  # a sample of it, under its documented name
    ok, err = status_count(client, 200), status_count(client, 500)
    dur = metric(client, 'litserve_request_duration_seconds_count{route="/predict"}')
    waits = metric(client, 'litserve_queue_wait_seconds_count{route="/predict"}')
    batches = metric(client, 'litserve_batch_size_count{route="/predict"}')
    for _ in range(5):
        client.post("/predict", json={"op": "echo"})
    client.post("/predict", json={"op": "raise"})
    client.post("/predict", content=_body_of(2000))  # 413: answered, never queued
    assert status_count(client, 200) == ok + 5
    assert status_count(client, 500) == err + 1
    assert metric(client, 'litserve_request_duration_seconds_count{route="/predict"}') == dur + 7
    assert metric(client, 'litserve_queue_wait_seconds_count{route="/predict"}') == waits + 6
    assert metric(client, 'litserve_batch_size_count{route="/predict"}') == batches + 6
    assert metric(client, 'litserve_batch_size_bucket{le="1.0",route="/predict"}') == batches + 6
    with blocked_requests(client, tmp_path / "gate", 1):
        wait_for((tmp_path / "gate.started").exists)
        assert metric(client, 'litserve_requests_in_flight{route="/predict"}') == 1
        assert metric(client, 'litserve_queue_depth{route="/predict"}') == 0
    wait_for(lambda: metric(client, 'litserve_requests_in_flight{route="/predict"}') == 0)


@pytest.fixture(scope="module")
def quick_timeout():
    app = ls.create_app(FaultAPI(), accelerator="cpu", devices=1, timeout=0.3, shutdown_grace=5)
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        yield app, server, client


def test_timeouts_are_counted(quick_timeout, tmp_path):
    app, server, client = quick_timeout
    timeouts = metric(client, 'litserve_timeouts_total{route="/predict"}')
    gate = tmp_path / "gate"
    try:
        r = client.post("/predict", json={"op": "block", "path": str(gate)}, headers={"X-Request-ID": "slow-1"})
        assert r.status_code == 504 and "0.3" in r.json()["detail"] and r.headers["x-request-id"] == "slow-1"
        assert metric(client, 'litserve_timeouts_total{route="/predict"}') == timeouts + 1
        assert status_count(client, 504) >= 1
        assert not app.pool.calls  # the app forgot it at once; the worker is told to drop it
    finally:
        gate.touch()
    wait_for(lambda: app.pool.scheduler.in_flight == 0)
    assert client.post("/predict", json={"op": "echo", "value": 2}).json()["value"] == 2


def test_disconnects_are_counted_and_leave_nothing_behind(limited, tmp_path):
    app, server, client = limited
    disconnects, gone = metric(client, 'litserve_disconnects_total{route="/predict"}'), status_count(client, 499)
    gate = tmp_path / "gate"
    body = json.dumps({"op": "block", "path": str(gate)}).encode()
    try:
        with connect(server.port, reset_on_close=True) as s:
            s.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: "
                + KEY.encode()
                + b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_for(Path(str(gate) + ".started").exists)
        wait_for(lambda: metric(client, 'litserve_disconnects_total{route="/predict"}') == disconnects + 1)
        assert not app.pool.calls
        assert status_count(client, 499) == gone + 1
    finally:
        gate.touch()
    wait_for(lambda: app.pool.scheduler.in_flight == 0)
    assert client.post("/predict", json={"op": "echo", "value": 2}).json()["value"] == 2
