"""Streaming through real HTTP and a real spawned worker: formats, order, errors before and during a
stream, client disconnects, per-chunk timeouts, and the batched-streaming refusal.

Slow streams wait on gate files the test creates; "what the worker did" is read from the API's log.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from apis_stream import BatchAPI, StreamAPI, read_log
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls


@pytest.fixture(scope="module")
def stream_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("streaming") / "stream.log"
    app = ls.create_app(StreamAPI(log=str(log)), accelerator="cpu", devices=1, timeout=20)
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        client.log = log
        yield client


def tag() -> str:
    return uuid.uuid4().hex[:12]


def events(log: Path, t: str) -> list[dict]:
    return [{k: v for k, v in rec.items() if k != "tag"} for rec in read_log(log) if rec.get("tag") == t]


def parse_sse(text: str) -> list[tuple[str, str]]:
    """(event, data) per SSE record; event is "message" when the record names none."""
    assert text.endswith("\n\n"), repr(text[-20:])
    out = []
    for record in text[:-2].split("\n\n"):
        event, data = "message", []
        for line in record.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        out.append((event, "\n".join(data)))
    return out


# -- formats -----------------------------------------------------------------------------------------------
def test_ndjson_is_the_default_one_json_value_per_line_in_order(stream_server):
    with stream_server.stream("POST", "/predict", json={"n": 25}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        assert len(r.headers["x-request-id"]) >= 16
        assert "content-length" not in r.headers
        body = r.read().decode()
    assert body.endswith("\n")
    lines = body[:-1].split("\n")
    assert [json.loads(line) for line in lines] == [{"i": i} for i in range(25)]


def test_chunks_arrive_as_they_are_produced(stream_server, tmp_path):
    """The first chunk reaches the client while the generator is still blocked before the second."""
    t, gate = tag(), tmp_path / "gate"
    with stream_server.stream(
        "POST", "/predict", json={"op": "gated", "gate": str(gate), "n": 2, "free": 1, "tag": t}
    ) as r:
        lines = r.iter_lines()
        assert json.loads(next(lines)) == {"i": 0}
        # The worker logs "waiting" just after sending chunk 0; on a loaded machine that may come after
        # the client has read it. Either way the model has not made chunk 1: it waits for the gate.
        wait_for(lambda: events(stream_server.log, t)[-1] == {"waiting": 1})
        (tmp_path / "gate.1").touch()
        assert json.loads(next(lines)) == {"i": 1}
        assert list(lines) == []
    wait_for(lambda: {"closed": True} in events(stream_server.log, t))


def test_sse_when_the_client_accepts_event_stream(stream_server):
    r = stream_server.post("/predict", json={"n": 4}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["cache-control"] == "no-cache"
    assert r.text == "".join(f'data: {{"i":{i}}}\n\n' for i in range(4))
    assert [json.loads(d) for _, d in parse_sse(r.text)] == [{"i": i} for i in range(4)]


def test_empty_stream_is_200_with_empty_body(stream_server):
    r = stream_server.post("/predict", json={"n": 0})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert r.content == b""


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_http_exception_before_the_first_chunk_keeps_its_status(stream_server, accept):
    r = stream_server.post("/predict", json={"op": "http", "status": 418}, headers={"Accept": accept})
    assert r.status_code == 418
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": "not a teapot today"}


def test_exception_before_the_first_chunk_is_500(stream_server):
    r = stream_server.post("/predict", json={"op": "raise_before"})
    assert r.status_code == 500
    assert r.json() == {"detail": "ValueError: bad input, refused before streaming"}


def test_invalid_json_on_a_stream_route_is_400(stream_server):
    r = stream_server.post("/predict", content=b"{nope")
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]


def test_error_mid_stream_ends_with_an_ndjson_error_record(stream_server):
    t = tag()
    r = stream_server.post("/predict", json={"op": "raise_after", "n": 3, "tag": t})
    assert r.status_code == 200  # already sent with the first chunk
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines == [{"i": 0}, {"i": 1}, {"detail": "ValueError: model broke after 2 chunks"}]
    assert events(stream_server.log, t)[-1] == {"closed": True}
    assert stream_server.post("/predict", json={"n": 1}).text == '{"i":0}\n'  # the worker lives on


def test_error_mid_stream_ends_with_an_sse_error_event(stream_server):
    r = stream_server.post("/predict", json={"op": "raise_after", "n": 2}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 200
    records = parse_sse(r.text)
    assert records[0] == ("message", '{"i":0}')
    assert records[1][0] == "error"
    assert json.loads(records[1][1]) == {"detail": "ValueError: model broke after 1 chunks"}
    assert len(records) == 2


# -- disconnects --------------------------------------------------------------------------------------------
def in_flight(client: httpx.Client) -> int:
    return client.get("/info").json()["in_flight"]


def test_client_disconnect_closes_the_generator_at_the_next_chunk(stream_server, tmp_path):
    t, gate = tag(), tmp_path / "gate"
    with httpx.Client(base_url=str(stream_server.base_url), timeout=30) as own:
        with own.stream("POST", "/predict", json={"op": "gated", "gate": str(gate), "n": 10, "free": 1, "tag": t}) as r:
            assert json.loads(next(r.iter_lines())) == {"i": 0}
        # leaving the block closed the connection mid-stream
    wait_for(lambda: in_flight(stream_server) == 0)  # the app saw the disconnect and sent CANCEL
    # The worker's reading thread marks the request cancelled when the CANCEL arrives, and the worker
    # checks that mark after sending each chunk, so the generator is closed at the first chunk
    # boundary after the CANCEL arrived. The test cannot see that arrival, only that the app sent it;
    # on a loaded machine it can land after the next chunk went out. So it releases the model one
    # chunk at a time and checks that, once stopped, the generator went no further than the chunk
    # it had made: every chunk made is followed by the close or by waiting for the next gate.
    for i in range(1, 10):
        seen = wait_for(
            lambda i=i: [e for e in events(stream_server.log, t) if e in ({"waiting": i}, {"closed": True})]
        )
        if seen[0] == {"closed": True}:
            break
        (tmp_path / f"gate.{i}").touch()  # let the model make chunk i
    made = [e for e in events(stream_server.log, t) if "chunk" in e]
    assert events(stream_server.log, t)[-1] == {"closed": True}
    assert len(made) <= 3, f"the generator ran on long after the client left: {made}"
    r = stream_server.post("/predict", json={"n": 2})  # the worker is free again
    assert r.status_code == 200 and r.text == '{"i":0}\n{"i":1}\n'


# -- per-chunk timeout ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stall_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("streaming-timeout") / "stream.log"
    app = ls.create_app(StreamAPI(log=str(log)), accelerator="cpu", devices=1, timeout=1.0)
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        client.log = log
        yield client


def test_stall_before_the_first_chunk_is_504_and_the_generator_is_closed(stall_server, tmp_path):
    t, gate = tag(), tmp_path / "gate"
    r = stall_server.post("/predict", json={"op": "gated", "gate": str(gate), "n": 3, "tag": t})
    assert r.status_code == 504
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": "the request did not complete within 1.0s"}
    # The CANCEL left with the 504, but the client can hear the 504 before the CANCEL reaches the
    # worker; the worker closes the generator at the first chunk boundary after it arrived. Release
    # the model chunk by chunk until it is closed: it must stop at once, not run to the end.
    for i in range(3):
        (tmp_path / f"gate.{i}").touch()
        stops = ({"waiting": i + 1}, {"closed": True})
        if wait_for(lambda stops=stops: [e for e in events(stall_server.log, t) if e in stops])[0] == {"closed": True}:
            break
    made = [e for e in events(stall_server.log, t) if "chunk" in e]
    assert events(stall_server.log, t)[-1] == {"closed": True} and len(made) <= 2, made


def test_stall_mid_stream_ends_with_an_error_record(stall_server, tmp_path):
    t, gate = tag(), tmp_path / "gate"
    r = stall_server.post("/predict", json={"op": "gated", "gate": str(gate), "n": 3, "free": 1, "tag": t})
    assert r.status_code == 200
    assert [json.loads(line) for line in r.text.splitlines()] == [
        {"i": 0},
        {"detail": "the request did not complete within 1.0s"},
    ]
    (tmp_path / "gate.1").touch()
    wait_for(lambda: {"closed": True} in events(stall_server.log, t))
    assert {"chunk": 2} not in events(stall_server.log, t)


@pytest.mark.slow
def test_timeout_is_per_chunk_not_per_stream(stall_server, tmp_path):
    """A stream longer than the timeout in total is fine while each gap is shorter than it."""
    t, gate = tag(), tmp_path / "gate"
    body = {"op": "gated", "gate": str(gate), "n": 4, "free": 1, "tag": t}
    started = time.monotonic()
    with stall_server.stream("POST", "/predict", json=body, headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        lines = (line for line in r.iter_lines() if line)
        got = [next(lines)]
        for i in range(1, 4):
            time.sleep(0.45)  # not synchronisation: the gap under test (timeout is 1.0 s)
            Path(f"{gate}.{i}").touch()
            got.append(next(lines))
        got.extend(lines)
    assert time.monotonic() - started > 1.0
    assert got == [f'data: {{"i":{i}}}' for i in range(4)]


# -- configuration ----------------------------------------------------------------------------------------
def test_a_batched_stream_needs_a_generator_predict():  # batched streaming itself: test_batched_streaming.py
    with pytest.raises(ls.ConfigurationError, match="generator"):
        ls.create_app(BatchAPI(stream=True), accelerator="cpu")
