"""Flow control of streams over real HTTP and real workers: a client that reads slower than the model
produces pauses its stream's worker (``stream_buffer``) instead of making the server hold the whole
stream, gets every chunk in order once it reads again, and a client that stops reading is cut off at
the timeout, which frees the worker.

"What the worker did" is read from the API's log (tests/apis_stream.py: FloodAPI and friends).
"""

from __future__ import annotations

import json
import socket
import uuid

import httpx
import pytest
from apis_stream import AsyncFloodAPI, FloodAPI, FloodLLM, FloodResponseAPI, read_log
from support.http import metric, status_count
from support.poll import poll_until, wait_for
from support.servers import ThreadServer

import litserve as ls

N, SIZE = 1000, 65536  # a 64 MiB stream: far more than the buffers between the worker and the client
BUFFER = 256 * 1024  # the server's stream_buffer in these tests
# Chunks the worker may have made while the client reads nothing: the stream buffer, the chunks made
# while the PAUSE was on its way, and the kernel's and the HTTP server's buffers (the client's receive
# buffer is set small, so about 4 MiB: the server's send buffer). The flood makes a chunk per 0.5 ms
# (apis_stream.FLOOD_PACE), so a stream that was never paused passes this in well under a second.
PAUSED_AT_MOST = N // 2
WRITE_TIMEOUTS = 'litserve_connections_timed_out_total{phase="write"}'  # connections cut off: not reading
APIS = {"sync": FloodAPI, "async": AsyncFloodAPI, "StreamingResponse": FloodResponseAPI}


def reader(server) -> httpx.Client:
    """A client with a small receive buffer (no autotuning up to tens of MiB): it stops taking bytes
    soon after it stops reading, as a slow client on a real network does."""
    small = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)]
    return httpx.Client(base_url=server.url, timeout=30, transport=httpx.HTTPTransport(socket_options=small))


def made(log, tag: str) -> int:
    """The most chunks the worker's generator is known to have made for ``tag`` (logged every 50)."""
    return max((rec.get("made", 0) for rec in read_log(log) if rec.get("tag") == tag), default=0)


def closed(log, tag: str) -> int | None:
    """How many chunks the generator had made when it was closed; None while it is open."""
    return next((rec["closed"] for rec in read_log(log) if rec.get("tag") == tag and "closed" in rec), None)


def text(line: str) -> str:
    """A chunk as the API made it: a stream's str chunk is a JSON string line, a Response's body is raw."""
    return json.loads(line) if line.startswith('"') else line


def pauses(client: httpx.Client) -> float:
    return metric(client, 'litserve_stream_pauses_total{route="/predict"}')


@pytest.fixture(scope="module", params=list(APIS))
def flood(request, tmp_path_factory):
    log = tmp_path_factory.mktemp("flood") / "flood.log"
    api = APIS[request.param](log=str(log))
    app = ls.create_app(api, accelerator="cpu", devices=1, timeout=20, stream_buffer=BUFFER)
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as probe:
        yield server, probe, log


def test_a_slow_reader_pauses_its_worker_then_gets_every_chunk_in_order(flood):
    server, probe, log = flood
    tag = uuid.uuid4().hex
    before = pauses(probe)
    with reader(server) as client:
        with client.stream("POST", "/predict", json={"n": N, "size": SIZE, "tag": tag}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert text(next(lines)) == f"{0:08d}".ljust(SIZE, "x")  # the stream runs; now the client stops reading
            wait_for(lambda: pauses(probe) > before, timeout=20)
            # Paused: the worker makes no more chunks while the client reads nothing (a stream that
            # was not paused would be made in full long before this poll gives up).
            assert not poll_until(lambda: made(log, tag) > PAUSED_AT_MOST, timeout=1.0)
            assert closed(log, tag) is None
            rest = [text(line) for line in lines]  # reading again resumes it, as often as needed
    assert [line[:8] for line in rest] == [f"{i:08d}" for i in range(1, N)]
    assert all(len(line) == SIZE for line in rest)
    assert wait_for(lambda: closed(log, tag), timeout=10) == N
    assert pauses(probe) >= before + 2  # it was paused again after resuming: the client never kept up


def test_a_client_that_leaves_a_paused_stream_frees_its_worker(flood):
    server, probe, log = flood
    tag = uuid.uuid4().hex
    before, left = pauses(probe), status_count(probe, 499)
    with reader(server) as client:
        with client.stream("POST", "/predict", json={"n": N, "size": SIZE, "tag": tag}) as r:
            lines = r.iter_lines()  # kept: dropping the iterator would close the connection
            next(lines)
            wait_for(lambda: pauses(probe) > before, timeout=20)
    # It left while its worker was paused: the CANCEL ends the pause, the generator is closed early.
    assert wait_for(lambda: closed(log, tag) is not None, timeout=20) and closed(log, tag) < N
    wait_for(lambda: status_count(probe, 499) == left + 1, timeout=20)  # its handler is done too
    reply = probe.post("/predict", json={"n": 3, "size": 10, "tag": uuid.uuid4().hex})
    assert reply.status_code == 200 and len(reply.text.splitlines()) == 3


@pytest.mark.parametrize("kind", ["sync", "StreamingResponse"])
def test_a_client_that_stops_reading_is_cut_off_at_the_timeout_and_its_worker_freed(tmp_path, kind):
    log = tmp_path / "flood.log"
    app = ls.create_app(APIS[kind](log=str(log)), accelerator="cpu", devices=1, timeout=1.5, stream_buffer=BUFFER)
    tag = uuid.uuid4().hex
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as probe:
        with reader(server) as client:
            with client.stream("POST", "/predict", json={"n": N, "size": SIZE, "tag": tag}) as r:
                assert r.status_code == 200
                lines = r.iter_lines()  # kept: dropping the iterator would close the connection
                next(lines)
                # It reads nothing more: 1.5 s after the last chunk it took, the server gives up on it
                # and the worker's generator is closed, far from the end of the stream.
                stopped_at = wait_for(lambda: closed(log, tag), timeout=20)
                assert stopped_at <= PAUSED_AT_MOST
                assert metric(probe, 'litserve_timeouts_total{route="/predict"}') == 1
                assert pauses(probe) >= 1  # (several: the kernel's buffers took chunks before they filled)
                # The server closed the connection too, dropping what it held for it: the request is
                # answered (504) while the client still reads nothing, and not counted as a disconnect.
                wait_for(lambda: status_count(probe, 504) == 1, timeout=20)
                assert metric(probe, WRITE_TIMEOUTS) == 1
                assert metric(probe, 'litserve_disconnects_total{route="/predict"}') == 0
                # The one worker is free again.
                other = uuid.uuid4().hex
                reply = probe.post("/predict", json={"n": 3, "size": 10, "tag": other})
                assert reply.status_code == 200
                assert [text(line) for line in reply.text.splitlines()] == [f"{i:08d}xx" for i in range(3)]
                # What the client gets when it reads again: what was in flight, then the cut.
                with pytest.raises(httpx.HTTPError):
                    for _ in lines:
                        pass


def test_a_fast_reader_is_never_paused(flood):
    server, probe, log = flood
    tag = uuid.uuid4().hex
    before = pauses(probe)
    with reader(server) as client:
        reply = client.post("/predict", json={"n": 40, "size": 1000, "tag": tag})
    assert reply.status_code == 200
    assert [text(line)[:8] for line in reply.text.splitlines()] == [f"{i:08d}" for i in range(40)]
    assert pauses(probe) == before  # 40 kB never fills a 256 KiB buffer


def test_an_openai_stream_of_several_choices_pauses_too(tmp_path):
    """``n`` > 1 choices are merged into one SSE stream: what waits for the client stays bounded there too."""
    log = tmp_path / "flood.log"
    app = ls.create_app(FloodLLM(log=str(log)), accelerator="cpu", devices=1, timeout=20, stream_buffer=BUFFER)
    tag = uuid.uuid4().hex
    body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} {N} {SIZE}"}], "stream": True, "n": 2}
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as probe:
        with reader(server) as client:
            with client.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                lines = (line for line in r.iter_lines() if line.startswith("data: "))
                first = json.loads(next(lines)[6:])  # the stream runs; now the client stops reading
                wait_for(lambda: pauses(probe) >= 1, timeout=20)
                # Paused, and it stays so: the choices' chunks are not all pulled into the server.
                assert not poll_until(lambda: made(log, tag) > PAUSED_AT_MOST, timeout=1.0)
                assert closed(log, tag) is None
                events = [first] + [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]
    content: dict[int, list[str]] = {0: [], 1: []}
    for event in events:
        for choice in event["choices"]:
            if choice["delta"].get("content"):
                content[choice["index"]].append(choice["delta"]["content"])
    expected = [f"{i:08d}".ljust(SIZE, "x") for i in range(N)]  # each choice whole, in order
    assert content == {0: expected, 1: expected}


@pytest.fixture(scope="module")
def openai_short(tmp_path_factory):
    log = tmp_path_factory.mktemp("flood") / "flood.log"
    app = ls.create_app(FloodLLM(log=str(log)), accelerator="cpu", devices=1, timeout=1.5, stream_buffer=BUFFER)
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as probe:
        yield server, probe, log


@pytest.mark.parametrize("n", [1, 2])
def test_an_openai_client_that_stops_reading_is_cut_off_at_the_timeout(openai_short, n):
    server, probe, log = openai_short
    tag = uuid.uuid4().hex
    body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} {N} {SIZE}"}], "stream": True, "n": n}
    answered, cut = status_count(probe, 504), metric(probe, WRITE_TIMEOUTS)
    disconnects = metric(probe, 'litserve_disconnects_total{route="/predict"}')
    with reader(server) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            next(lines)  # then nothing more
            wait_for(lambda: closed(log, tag) is not None, timeout=20)  # the generator closed early
            assert closed(log, tag) < N
            # The connection is closed, so the request is over (504) while the client reads nothing.
            wait_for(lambda: status_count(probe, 504) == answered + 1, timeout=20)
            assert metric(probe, WRITE_TIMEOUTS) == cut + 1
            assert metric(probe, 'litserve_disconnects_total{route="/predict"}') == disconnects
            with pytest.raises(httpx.HTTPError):
                for _ in lines:
                    pass
