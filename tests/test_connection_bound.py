"""A bound on open connections (issue 11 item 2): at ``max_connections`` the oldest idle connection is
closed to make room; when none is idle the new one gets 503; and a flood of idle connections against
a server whose open-file limit is small leaves honest requests served, under ``LitServer.run`` and
under plain ``uvicorn module:app`` and ``litserve serve`` alike (the flood runs in a subprocess under ``ulimit -n``)."""

from __future__ import annotations

import os
import socket
import sys
import textwrap

import httpx
import pytest
from apis_faults import FaultAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from support.http import connect, metric, post_raw, read_response
from support.poll import wait_for
from support.servers import Proc, ThreadServer

import litserve as ls
from litserve.core.http_limits import Board, Limits, default_max_connections

CAP = 3


def sample(app: ls.LitApp, name: str) -> float:
    """A /metrics sample read in-process: an HTTP scrape would itself take one of the few connections."""
    text = app.metrics.exposition()[0].decode()
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


def is_open(sock: socket.socket) -> bool:
    """True while the server has not closed ``sock`` (it sends nothing to an idle connection)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


@pytest.fixture(scope="module")
def bounded():
    app = ls.create_app(
        FaultAPI(), accelerator="cpu", devices=1, timeout=30, max_connections=CAP, header_timeout=60, max_queue_size=8
    )
    with ThreadServer(app) as server:
        yield app, server


def settle(app: ls.LitApp) -> None:
    wait_for(lambda: sample(app, "litserve_connections_open") == 0)


def test_at_the_cap_the_oldest_idle_connection_makes_room(bounded):
    app, server = bounded
    settle(app)
    shed = sample(app, "litserve_connections_shed_total")
    socks = [connect(server.port, timeout=10) for _ in range(CAP)]
    try:
        wait_for(lambda: sample(app, "litserve_connections_open") == CAP)
        newest = connect(server.port, timeout=10)
        socks.append(newest)
        wait_for(lambda: sample(app, "litserve_connections_shed_total") == shed + 1)
        assert not is_open(socks[0])  # the oldest went
        assert all(is_open(s) for s in socks[1:])  # the others stay
        body = b'{"op": "echo", "value": 4}'
        newest.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        status, _, reply = read_response(newest)  # the newcomer is served
        assert status == 200 and b'"value":4' in reply
    finally:
        for s in socks:
            s.close()


def test_with_every_connection_busy_a_new_one_gets_503_and_is_counted(bounded, tmp_path):
    app, server = bounded
    settle(app)
    refused = sample(app, "litserve_connections_refused_total")
    gate = tmp_path / "gate"
    busy = [post_raw(server.port, {"op": "block", "path": str(gate)}) for _ in range(CAP)]
    try:
        wait_for(lambda: len(app.pool.calls) == CAP)  # three requests in progress: no connection is idle
        with connect(server.port, timeout=10) as extra:
            status, headers, body = read_response(extra)
        assert status == 503 and headers["retry-after"] == "1" and b"too many open connections" in body
        assert sample(app, "litserve_connections_refused_total") == refused + 1
    finally:
        gate.touch()
    for s in busy:  # the requests that held the connections are answered as usual
        s.settimeout(30)
        assert read_response(s)[0] == 200
        s.close()


def test_the_default_cap_leaves_room_under_the_open_file_limit():
    assert default_max_connections(256) == 192
    assert default_max_connections(1024) == 896
    assert default_max_connections(1 << 20) == (1 << 20) - (1 << 17)


MODULE = textwrap.dedent(
    """
    import sys
    import litserve as ls
    from apis_faults import FaultAPI

    # header_timeout=60: here it is the connection bound, not the header deadline, that must hold
    app = ls.create_app(FaultAPI(), accelerator="cpu", devices=1, timeout=30, header_timeout=60)
    api = FaultAPI()  # for `litserve serve floodmod:api --header-timeout 60`

    if __name__ == "__main__":
        ls.LitServer(FaultAPI(), accelerator="cpu", devices=1, timeout=30, header_timeout=60).run(
            host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False
        )
    """
)
LIMIT, FLOOD = 256, 400  # the server may open 256 files; 400 idle connections would exhaust them


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["uvicorn", "litserver", "cli"])
def test_a_flood_of_idle_connections_leaves_honest_requests_served(tmp_path, runner):
    (tmp_path / "floodmod.py").write_text(MODULE)
    if runner == "uvicorn":
        command = '"$0" -m uvicorn floodmod:app --host 127.0.0.1 --port {port} --log-level warning'
    elif runner == "cli":
        command = (
            '"$0" -m litserve serve floodmod:api --host 127.0.0.1 --port {port} --accelerator cpu --header-timeout 60'
        )
    else:
        command = '"$0" floodmod.py {port}'
    with Proc(["sh", "-c", f"ulimit -n {LIMIT} && exec {command}", sys.executable], tmp_path) as proc:
        proc.wait_http("/ready", timeout=60)
        with httpx.Client(base_url=proc.url, timeout=30) as honest:
            assert honest.post("/predict", json={"op": "echo", "value": 0}).status_code == 200
            flood: list[socket.socket] = []
            try:
                for i in range(FLOOD):
                    flood.append(connect(proc.port, timeout=10))
                    if i % 50 == 49:  # honest traffic keeps being served all along the flood
                        r = honest.post("/predict", json={"op": "echo", "value": i})
                        assert r.status_code == 200 and r.json()["value"] == i
                        assert open_files(proc.pid) < LIMIT
                wait_for(lambda: metric(honest, "litserve_connections_shed_total") >= FLOOD - LIMIT)
                assert open_files(proc.pid) < LIMIT
                for i in range(10):  # on new connections too
                    assert (
                        httpx.post(proc.url + "/predict", json={"op": "echo", "value": i}, timeout=30).status_code
                        == 200
                    )
                assert metric(honest, "litserve_connections_refused_total") == 0
            finally:
                for s in flood:
                    s.close()
        assert "Too many open files" not in proc.output()


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeConn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.transport = FakeTransport()


@settings(max_examples=150, deadline=None)
@given(
    cap=st.integers(1, 6),
    events=st.lists(st.tuples(st.sampled_from(["connect", "busy", "idle", "close"]), st.integers(0, 30)), max_size=80),
)
def test_the_bound_never_exceeds_the_cap_and_sheds_only_the_longest_idle(cap, events):
    """The admission policy on its own: connections come, start and finish requests, and leave."""
    board = Board(Limits(max_connections=cap), metrics=None)
    conns: list[FakeConn] = []
    idle_order: list[FakeConn] = []  # the model: idle connections, longest idle first
    for kind, i in events:
        live = [c for c in conns if c in board.open]
        if kind == "connect":
            conn = FakeConn(len(conns))
            expect_shed = idle_order[0] if len(live) >= cap and idle_order else None
            admitted = board.admit(conn)
            assert admitted == (len(live) < cap or expect_shed is not None)
            if expect_shed is not None:
                assert expect_shed.transport.closed and expect_shed not in board.open
                idle_order.remove(expect_shed)
            if admitted:
                conns.append(conn)
                board.idle[conn] = None  # a new connection waits for its headers: idle
                idle_order.append(conn)
        elif live:
            conn = live[i % len(live)]
            if kind == "busy" and conn in board.idle:
                board.idle.pop(conn)
                idle_order.remove(conn)
            elif kind == "idle" and conn not in board.idle:
                board.idle[conn] = None
                idle_order.append(conn)
            elif kind == "close":
                board.drop(conn)
                if conn in idle_order:
                    idle_order.remove(conn)
        assert len(board.open) <= cap
        assert list(board.idle) == idle_order
        assert all(not c.transport.closed for c in board.open)  # a connection shed is no longer counted
