"""Property tests on the server's edges (issue 4, item 8 and the "never 5xx on bad input" promise).

- Malformed HTTP bodies and headers, through a real socket, never get a 5xx.
- ``protocol.decode`` raises only ``ProtocolError`` on any frames at all.
- Frames sent to the app's ROUTER socket by a foreign DEALER are ignored: the receive loop survives
  and a forged reply never resolves a real request.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from pathlib import Path

import httpx
import pytest
import zmq
from apis_faults import AnyJSONAPI, FaultAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.http import connect
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls
from litserve.core import protocol as P

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- the frame decoder ------------------------------------------------------------------------------------
valid_header = st.sampled_from(sorted(P.KINDS)).map(lambda k: bytes((P.VERSION, k)))
item_head = st.one_of(
    st.binary(max_size=P.ITEM_SIZE + P.MAX_TAG_BYTES + 4),
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**16 - 1), st.binary(max_size=300)).map(
        lambda t: P.item_head(t[0], t[1], t[2])
    ),
)
frames_strategy = st.one_of(
    st.lists(st.binary(max_size=64), max_size=8),  # anything at all
    st.tuples(valid_header, st.lists(st.one_of(item_head, st.binary(max_size=64)), max_size=7)).map(
        lambda t: [t[0], *t[1]]  # a real header, then items of every shape
    ),
)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(frames_strategy)
def test_decode_raises_only_protocol_error(frames):
    try:
        kind, items = P.decode(frames)
    except P.ProtocolError:
        return
    # What it accepts is well formed: a known kind and whole (head, payload) pairs.
    assert kind in P.KINDS
    assert len(items) == (len(frames) - 1) // 2
    for it in items:
        assert 0 <= it.rid < 2**64 and 0 <= it.status < 2**16 and len(it.tag) <= P.MAX_TAG_BYTES


def test_decode_round_trips_what_encode_makes():
    frames = P.encode(P.RESULT, [(7, 200, b'{"a": 1}'), (2**64 - 1, 599, b"")])
    kind, items = P.decode(frames)
    assert kind == P.RESULT and [(i.rid, i.status, i.payload) for i in items] == [
        (7, 200, b'{"a": 1}'),
        (2**64 - 1, 599, b""),
    ]


# -- malformed HTTP ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def anyjson():
    app = ls.create_app(AnyJSONAPI(), accelerator="cpu", devices=1, timeout=10, max_payload_size="64KB")
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        yield server, client


header_value = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=200
).map(str.strip)  # h11 (client side) refuses surrounding whitespace
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
).map(lambda v: json.dumps(v).encode())
bodies = st.one_of(
    st.binary(max_size=2000),
    json_like,
    st.sampled_from(
        [
            b"",
            b"{",
            b"[" * 5000,
            b"[" * 5000 + b"]" * 5000,
            b"1e999",
            b"-1e999",
            b"NaN",
            b"Infinity",
            b'"\\ud800"',
            b"\xff\xfe",
            b'{"a": 1}{"b": 2}',
            b"\x00",
            b"9" * 5000,
        ]
    ),
)


@pytest.mark.slow
@FAST
@given(body=bodies, content_type=header_value, request_id=header_value, accept=header_value, key=header_value)
def test_malformed_bodies_and_headers_never_get_a_5xx(anyjson, body, content_type, request_id, accept, key):
    server, client = anyjson
    headers = {"content-type": content_type, "x-request-id": request_id, "accept": accept, "x-api-key": key}
    r = client.post("/predict", content=body, headers={k: v.encode("latin-1") for k, v in headers.items()})
    assert r.status_code < 500, (body[:100], r.status_code, r.text[:300])
    assert r.headers["x-request-id"]
    assert "detail" in r.json() if r.status_code >= 400 else "echo" in r.json()


request_lines = st.one_of(
    st.binary(max_size=300),
    st.tuples(
        st.sampled_from([b"POST", b"GET", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"BREW", b""]),
        st.sampled_from(
            [
                b"/predict",
                b"/health",
                b"/ready",
                b"/info",
                b"/metrics",
                b"/openapi.json",
                b"/predict/../info",
                b"//predict",
                b"/%00",
                b"*",
                b"",
            ]
        ),
        st.lists(st.binary(max_size=60).filter(lambda b: b"\r\n" not in b), max_size=5),
        st.binary(max_size=200),
    ).map(
        lambda t: (
            t[0]
            + b" "
            + t[1]
            + b" HTTP/1.1\r\nHost: x\r\n"
            + b"\r\n".join(t[2])
            + (b"\r\n" if t[2] else b"")
            + b"\r\n"
            + t[3]
        )
    ),
)


@FAST
@given(raw=request_lines)
def test_raw_garbage_on_the_socket_never_gets_a_5xx(anyjson, raw):
    server, client = anyjson
    with connect(server.port, timeout=10, reset_on_close=True) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)  # nothing more is coming: the server answers or closes
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except ConnectionResetError:
            pass
    if buf:
        status = int(buf.split(b" ", 2)[1])
        assert status < 500, (raw[:200], buf[:300])
    # Whatever it was, the server still serves.
    assert client.post("/predict", json={"ok": 1}).json() == {"echo": {"ok": 1}}


# -- the ROUTER socket --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    app = ls.create_app(FaultAPI(), accelerator="cpu", devices=1, workers_per_device=2, timeout=20)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDTIMEO, 2000)
        dealer.connect(app.pool._supervisor.address)
        try:
            yield app, client, dealer
        finally:
            dealer.close(linger=0)
            ctx.term()


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "unknown peer" in record.getMessage():
            self.n += 1


@pytest.fixture(scope="module")
def unknown_peer_warnings():
    handler = Count()
    logger = logging.getLogger("litserve")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.slow
@FAST
@given(frames=st.one_of(frames_strategy.filter(bool), st.lists(st.binary(max_size=2000), min_size=1, max_size=4)))
def test_foreign_frames_on_the_router_are_ignored_and_the_server_keeps_answering(routed, unknown_peer_warnings, frames):
    app, client, dealer = routed
    seen = unknown_peer_warnings.n
    dealer.send_multipart(frames)
    wait_for(lambda: unknown_peer_warnings.n > seen)  # the loop read it, and dropped it
    r = client.post("/predict", json={"op": "echo", "value": 5})
    assert r.status_code == 200 and r.json()["value"] == 5


def test_a_forged_reply_from_a_foreign_peer_never_resolves_a_request(routed, unknown_peer_warnings, tmp_path):
    app, client, dealer = routed
    gate = tmp_path / "gate"
    result: list = []
    t = threading.Thread(target=lambda: result.append(client.post("/predict", json={"op": "block", "path": str(gate)})))
    t.start()
    try:
        wait_for(Path(str(gate) + ".started").exists)
        [rid] = list(app.pool.calls)
        seen = unknown_peer_warnings.n
        for kind in (P.RESULT, P.END, P.CHUNK):
            dealer.send_multipart(P.encode(kind, [(rid, 200, b'{"forged": true}')]))
        dealer.send_multipart(P.encode(P.READY, [(0, 64, b'{"pid": 1, "device": "cpu"}')]))
        wait_for(lambda: unknown_peer_warnings.n >= seen + 4)
        assert list(app.pool.calls) == [rid] and not result  # still waiting for its real worker
        assert len(app.pool.workers_info()) == 2  # READY from a stranger added no worker
    finally:
        gate.touch()
        t.join(20)
    assert result[0].status_code == 200 and result[0].json()["released"] is True
