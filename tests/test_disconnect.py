"""A client that leaves: the app is driven through hand-written ASGI ``scope``/``receive``/``send``
(as Starlette's own tests do), where ``receive`` answers ``http.disconnect`` when the test says so.

A request still waiting for a worker is dropped and never reaches predict; a running one is CANCELled
on its worker; nothing is sent to a client that has gone, and nothing is left in ``pool.calls``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from apis import BehaviourAPI
from support.poll import until

import litserve as ls
from litserve.core import protocol as P


class Client:
    """One HTTP request as the ASGI server would present it, with a disconnect the test controls."""

    def __init__(self, app: ls.LitApp, body: dict, request_id: str) -> None:
        raw = json.dumps(body).encode()
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.body = raw
        self.body_sent = False
        self.leave = asyncio.Event()
        self.sent: list[dict] = []
        self.task = asyncio.ensure_future(app(self.scope, self.receive, self.send))

    async def receive(self) -> dict:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    def json(self) -> object:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


@pytest.fixture
def log(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "predict.log"
    monkeypatch.setenv("LITSERVE_TEST_LOG", str(path))  # read by the worker's setup
    return path


def test_disconnected_clients_are_dropped_or_cancelled(tmp_path, log):
    app = ls.create_app(BehaviourAPI(), accelerator="cpu", devices=1, workers_per_device=1, timeout=None)
    gate = tmp_path / "gate"
    started = Path(str(gate) + ".started")

    async def scenario() -> None:
        pool = app.pool
        async with app.running():
            sent: list[tuple[int, list[P.Item]]] = []
            send = pool._send

            def recording_send(identity: bytes, frames: list[bytes]) -> None:
                sent.append(P.decode(frames))
                send(identity, frames)

            pool._send = recording_send  # type: ignore[method-assign]

            def rid_of(tag: str) -> int:
                return next(it.rid for k, its in sent if k == P.REQUEST for it in its if it.tag == tag.encode())

            def cancelled() -> set[int]:
                return {it.rid for k, its in sent if k == P.CANCEL for it in its}

            [worker] = pool.scheduler.workers.values()
            # No prefetch here, whatever run time the worker reports: what it holds is what it runs.
            pool.scheduler.prefetch_below = 0.0
            # Fill every run slot of the worker: the first runs (blocks), the rest (if any) run too;
            # the next request then has to wait in the app's queue.
            running = Client(app, {"op": "block", "path": str(gate), "tag": "A"}, "req-A")
            await until(started.exists)
            fillers = [Client(app, {"op": "echo", "tag": f"F{i}"}, f"req-F{i}") for i in range(worker.run_slots - 1)]
            await until(lambda: pool.scheduler.in_flight == worker.run_slots)
            queued = Client(app, {"op": "echo", "tag": "Q"}, "req-Q")
            await until(lambda: pool.scheduler.queued == 1)
            n_calls = len(pool.calls)

            queued.leave.set()
            await asyncio.wait_for(queued.task, 5)
            assert queued.sent == []  # nothing is sent to a client that left
            assert pool.scheduler.queued == 0 and len(pool.calls) == n_calls - 1
            assert not cancelled()  # no worker had it, so no worker is told anything

            running.leave.set()
            await asyncio.wait_for(running.task, 5)
            assert running.sent == []
            assert cancelled() == {rid_of("req-A")}
            assert len(pool.calls) == n_calls - 2
            assert pool.scheduler.in_flight == worker.run_slots  # its slot frees when the worker replies

            gate.write_text("go")
            for f in fillers:
                await asyncio.wait_for(f.task, 10)
                assert f.status == 200
            await until(lambda: pool.scheduler.in_flight == 0)
            assert not pool.calls

            after = Client(app, {"op": "echo", "tag": "after", "value": 5}, "req-after")
            await asyncio.wait_for(after.task, 10)
            assert after.status == 200 and after.json()["value"] == 5
            assert not any(it.tag == b"req-Q" for _, its in sent for it in its), "the queued request was sent"
            assert not pool.calls and pool.scheduler.queued == 0 and pool.scheduler.in_flight == 0
        assert pool.state == "stopped"

    asyncio.run(scenario())
    predicted = log.read_text().split()
    assert "A" in predicted and "after" in predicted
    assert "Q" not in predicted, "a request whose client left while queued reached predict"


def test_a_handler_cancelled_by_its_server_cancels_its_request(tmp_path, log):
    """The ASGI server may cancel the request's task itself (shutdown, a protocol error): the request
    is then CANCELled on its worker too, and nothing of it is left in the pool."""
    app = ls.create_app(BehaviourAPI(), accelerator="cpu", devices=1, workers_per_device=1, timeout=None)
    gate = tmp_path / "gate"

    async def scenario() -> None:
        pool = app.pool
        async with app.running():
            cancels: list[int] = []
            send = pool._send

            def recording_send(identity: bytes, frames: list[bytes]) -> None:
                kind, items = P.decode(frames)
                if kind == P.CANCEL:
                    cancels.extend(it.rid for it in items)
                send(identity, frames)

            pool._send = recording_send  # type: ignore[method-assign]
            running = Client(app, {"op": "block", "path": str(gate), "tag": "A"}, "req-A")
            await until(Path(str(gate) + ".started").exists)
            [rid] = pool.calls
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
            assert cancels == [rid] and not pool.calls and running.sent == []
            gate.write_text("go")
            await until(lambda: pool.scheduler.in_flight == 0)

    asyncio.run(scenario())


def test_client_leaving_while_the_body_is_read_is_not_submitted(log):
    app = ls.create_app(BehaviourAPI(), accelerator="cpu", devices=1, workers_per_device=1)

    async def scenario() -> None:
        async with app.running():
            sent: list[dict] = []

            async def receive() -> dict:
                return {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append(message)

            client = Client(app, {"op": "echo", "tag": "never"}, "req-never")
            client.task.cancel()  # only its scope is used here
            await asyncio.gather(client.task, return_exceptions=True)
            await app(client.scope, receive, send)
            assert sent == []
            assert not app.pool.calls and app.pool.scheduler.queued == 0 and app.pool.scheduler.in_flight == 0

    asyncio.run(scenario())
    assert "never" not in (log.read_text().split() if log.exists() else [])


def test_a_client_that_stays_gets_its_answer(log):
    app = ls.create_app(BehaviourAPI(), accelerator="cpu", devices=1, workers_per_device=1)

    async def scenario() -> None:
        async with app.running():
            client = Client(app, {"op": "echo", "value": 3}, "req-stays")
            await asyncio.wait_for(client.task, 10)
            assert client.status == 200 and client.json()["value"] == 3
            headers = dict(client.sent[0]["headers"])
            assert headers[b"x-request-id"] == b"req-stays"
            assert not app.pool.calls

    asyncio.run(scenario())
