"""Read deadlines (issue 11 item 1), on real sockets, under uvicorn's httptools and h11 protocols alike:
headers that never complete get 408 and the connection closes at ``header_timeout``; a body that stalls
or trickles gets 408 at the request's budget and frees its slot; an idle keep-alive connection closes
at ``keep_alive_timeout``; and the server keeps answering honest requests throughout.

Deadlines here are one or two seconds; a check that something happened "by the deadline" allows
generous slack on a loaded machine (the socket's own timeout), and "not before the deadline" is exact.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from apis_faults import FaultAPI
from support.http import connect, metric, read_response, status_count
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls
from litserve.core.http_limits import Limits

HEADER_TIMEOUT, BUDGET, KEEP_ALIVE = 0.5, 1.0, 0.5
SLACK = 10.0  # how long past a deadline the test waits before it fails: a bound, never a measurement
HEAD = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module", params=["httptools", pytest.param("h11", marks=pytest.mark.slow)])
def served(request):
    app = ls.create_app(
        FaultAPI(),
        accelerator="cpu",
        devices=1,
        timeout=30,
        body_timeout=BUDGET,
        header_timeout=HEADER_TIMEOUT,
        keep_alive_timeout=KEEP_ALIVE,
    )
    with ThreadServer(app, http=request.param) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert server.server.config.http_protocol_class.__name__.startswith("Limited")  # installed by the lifespan
        yield app, server, client


def closed_after(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes ``sock``, and when the close came (monotonic)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic()
        data += chunk


def timed_out(client: httpx.Client, phase: str) -> float:
    return metric(client, f'litserve_connections_timed_out_total{{phase="{phase}"}}')


def honest(client: httpx.Client) -> None:
    assert client.post("/predict", json={"op": "echo", "value": 7}).json()["value"] == 7


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /predi", HEAD + b"Content-Length: 2\r\nX-Slow: "],
    ids=["nothing", "half-a-request-line", "half-the-headers"],
)
def test_headers_not_complete_by_the_deadline_get_408_and_the_connection_closes(served, sent):
    app, server, client = served
    before = timed_out(client, "headers")
    with connect(server.port, timeout=HEADER_TIMEOUT + SLACK) as s:
        t0 = time.monotonic()
        s.sendall(sent)
        data, closed = closed_after(s)
    assert closed - t0 >= HEADER_TIMEOUT - 0.05
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"headers did not arrive" in data
    wait_for(lambda: timed_out(client, "headers") == before + 1)
    honest(client)


def test_a_kept_alive_connection_owes_its_next_request_headers_in_time_too(served):
    app, server, client = served
    body = b'{"op": "echo", "value": 1}'
    with connect(server.port, timeout=HEADER_TIMEOUT + SLACK) as s:
        s.sendall(HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        status, _, reply = read_response(s)
        assert status == 200 and b'"value":1' in reply
        s.sendall(b"POST /predict HTTP/1.1\r\nHo")  # the next request starts, and stops
        t0 = time.monotonic()
        data, closed = closed_after(s)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert closed - t0 >= HEADER_TIMEOUT - 0.05


@pytest.mark.parametrize("how", ["stalled", "trickling"])
def test_a_body_not_in_by_the_budget_gets_408_and_frees_its_slot(served, how):
    app, server, client = served
    before_408, before_body = status_count(client, 408), timed_out(client, "body")
    with connect(server.port, timeout=BUDGET + SLACK) as s:
        s.sendall(HEAD + b'Content-Length: 1000\r\n\r\n{"op": "echo", "value": "')
        t0 = time.monotonic()
        if how == "trickling":  # a byte every 0.2 s: each read is recent, the whole body is late
            s.settimeout(0.2)
            data = b""
            for _ in range(int((BUDGET + SLACK) / 0.2)):  # bounded: ends by the slack at the latest
                try:
                    data = s.recv(65536)
                    break
                except TimeoutError:
                    pass
                try:
                    s.sendall(b"x")
                except OSError:
                    break
            s.settimeout(SLACK)
            rest, closed = closed_after(s)
            data += rest
        else:
            data, closed = closed_after(s)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"body did not arrive" in data
    assert closed - t0 >= BUDGET - 0.05
    wait_for(lambda: status_count(client, 408) == before_408 + 1)  # counted as a 408, not as a client leaving
    assert timed_out(client, "body") == before_body + 1
    wait_for(lambda: not app.pool.calls and app.pool.scheduler.queued == 0)  # the slot is free
    honest(client)


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(served):
    app, server, client = served
    before = timed_out(client, "idle")
    body = b'{"op": "echo", "value": 3}'
    with connect(server.port, timeout=KEEP_ALIVE + SLACK) as s:
        s.sendall(HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert read_response(s)[0] == 200
        t0 = time.monotonic()
        data, closed = closed_after(s)
    assert data == b""  # closed quietly: the client was not in the middle of anything
    assert closed - t0 >= KEEP_ALIVE - 0.05
    wait_for(lambda: timed_out(client, "idle") >= before + 1)


def test_complete_requests_are_unaffected_however_slowly_they_follow_each_other(served):
    """A client that sends each request whole, pausing less than keep_alive_timeout, is served."""
    app, server, client = served
    body = b'{"op": "echo", "value": 5}'
    with connect(server.port, timeout=SLACK) as s:
        for _ in range(3):
            s.sendall(HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            assert read_response(s)[0] == 200
            time.sleep(KEEP_ALIVE / 2)  # client behaviour under test: a pause shorter than the idle timeout


def test_pipelined_requests_in_one_read_are_all_answered_in_order(served):
    app, server, client = served
    bodies = [b'{"op": "echo", "value": %d}' % i for i in range(3)]
    data = b""
    with connect(server.port, timeout=SLACK) as s:
        s.sendall(b"".join(HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(b), b) for b in bodies))
        while data.count(b"HTTP/1.1 ") < 3 or b'"value":2' not in data:  # bounded by the socket's timeout
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert data.count(b"HTTP/1.1 200 ") == 3
    assert data.index(b'"value":0') < data.index(b'"value":1') < data.index(b'"value":2')


def test_limits_follow_the_settings():
    app = ls.create_app(FaultAPI(), timeout=20, header_timeout=3, keep_alive_timeout=7, max_connections=50)
    assert app.connection_limits() == Limits(
        header_timeout=3, body_timeout=20, keep_alive_timeout=7, max_connections=50
    )
    app = ls.create_app(FaultAPI(), timeout=None, body_timeout=4, header_timeout=None)
    assert app.connection_limits().body_timeout == 4 and app.connection_limits().header_timeout is None
    with pytest.raises(ls.ConfigurationError, match="header_timeout"):
        ls.create_app(FaultAPI(), header_timeout=0)
    with pytest.raises(ls.ConfigurationError, match="max_connections"):
        ls.create_app(FaultAPI(), max_connections=0)
