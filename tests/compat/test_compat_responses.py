"""A ``StreamingResponse`` or ``FileResponse`` returned by ``encode_response``, as FastAPI users write it:
the client gets its status, headers and media type, and its body as the worker produces it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from serving import serve_file
from support.poll import wait_for

pytestmark = pytest.mark.slow  # the test serves a file in a subprocess


def test_streaming_and_file_responses_reach_the_client(tmp_path):
    with serve_file("streamed_responses.py", tmp_path) as proc, httpx.Client(base_url=proc.url, timeout=30) as client:
        # a def API streams lines from a generator: the first arrives while the generator waits for the test
        go = tmp_path / "go"
        with client.stream("POST", "/report", json={"rows": 3, "wait_for": str(go)}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/csv; charset=utf-8"
            assert r.headers["x-rows"] == "3" and "x-request-id" in r.headers
            assert "content-length" not in r.headers  # sent as it comes, not buffered whole
            chunks = r.iter_raw()
            assert next(chunks) == b"n,square\n"
            go.touch()  # only now may the generator go on
            assert b"".join(chunks) == b"0,0\n1,1\n2,4\n"

        # an async generator in a def API's worker
        r = client.post("/report", json={"rows": 2, "async": True})
        assert r.status_code == 200 and r.text == "n,square\n0,0\n1,1\n"

        # an error inside the iterator ends the body with an error record, as a stream=True error does
        r = client.post("/report", json={"rows": 3, "fail_at": 1})
        assert r.status_code == 200
        head, record = r.text.splitlines()[:2], r.text.splitlines()[2]
        assert head == ["n,square", "0,0"]
        assert "detail" in json.loads(record)
        assert client.post("/report", json={"rows": 1}).text == "n,square\n0,0\n"  # the worker lives on

        # an async API: server-sent events with the response's own status
        r = client.post("/events", json={"count": 3})
        assert r.status_code == 202 and r.headers["content-type"].startswith("text/event-stream")
        assert r.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
        r = client.post("/events", json={"count": 3, "fail_at": 2})
        assert r.text.startswith("data: 0\n\ndata: 1\n\nevent: error\ndata: {")
        assert "detail" in json.loads(r.text.split("event: error\ndata: ", 1)[1])

        closed = tmp_path / "closed-events"
        with client.stream("POST", "/events", json={"count": 0, "closed": str(closed)}) as r:
            assert next(r.iter_raw()).startswith(b"data: 1\n\n")
        sent = int(wait_for(lambda: closed.exists() and closed.read_text(), timeout=30))
        assert sent < 10**7

        # a file larger than one chunk, read in the worker; its background task deletes it afterwards
        size = 1_000_003
        r = client.post("/download", json={"size": size})
        assert r.status_code == 200
        assert r.content == bytes(i % 251 for i in range(size))
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"] == 'attachment; filename="data.bin"'
        assert "etag" in r.headers and "last-modified" in r.headers
        written = Path(r.headers["x-path"])
        wait_for(lambda: not written.exists(), timeout=20)

        # a client that leaves mid-body: the worker stops at its next chunk and closes the generator
        go, closed = tmp_path / "go2", tmp_path / "closed"
        with client.stream("POST", "/report", json={"rows": 0, "wait_for": str(go), "closed": str(closed)}) as r:
            assert next(r.iter_raw()) == b"n\n"
        go.touch()  # the connection is closed: the generator may go on, and is stopped
        sent = int(wait_for(lambda: closed.exists() and closed.read_text(), timeout=30))
        assert sent < 10**7
        assert client.post("/report", json={"rows": 1}).text == "n,square\n0,0\n"  # the worker is free

        # a file that is not there: a plain error reply, before anything was sent
        r = client.post("/missing", json={})
        assert r.status_code == 500 and "detail" in r.json()
