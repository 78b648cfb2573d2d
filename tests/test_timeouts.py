"""``timeout``: 504 close to the deadline for a request still waiting and for one running; an expired
request never reaches ``predict``; a running one is CANCELled and its late result dropped."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from apis import BehaviourAPI
from apis_core import BatchedBehaviourAPI
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls
from litserve.core import protocol as P

TIMEOUT = 0.6
SLACK = 0.1  # how late after its deadline a 504 may arrive, measured at the client


class Server:
    """A served app plus a record of every frame the pool sends to its workers."""

    def __init__(self, app: ls.LitApp, server: ThreadServer, log: Path, tmp: Path) -> None:
        self.app, self.pool, self.url, self.log, self.tmp = app, app.pool, server.url, log, tmp
        self.sent: list[tuple[int, list[P.Item]]] = []
        send = self.pool._send

        def recording_send(identity: bytes, frames: list[bytes]) -> None:
            self.sent.append(P.decode(frames))
            send(identity, frames)

        self.pool._send = recording_send  # type: ignore[method-assign]

    def rids(self, kind: int) -> dict[bytes, int] | set[int]:
        items = [it for k, its in self.sent if k == kind for it in its]
        return {it.tag: it.rid for it in items} if kind == P.REQUEST else {it.rid for it in items}

    def predicted(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def idle(self) -> bool:
        return not self.pool.calls and self.pool.scheduler.in_flight == 0 and self.pool.scheduler.queued == 0


def _serve(tmp_path_factory, api, timeout):
    tmp = tmp_path_factory.mktemp("timeouts")
    log = tmp / "predict.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITSERVE_TEST_LOG", str(log))  # read by the worker's setup, so set before it spawns
        app = ls.create_app(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=timeout)
        with ThreadServer(app, ready=True) as server:
            yield Server(app, server, log, tmp)


@pytest.fixture(scope="module", params=["sync", "batched"])
def server(request, tmp_path_factory):
    api = BehaviourAPI() if request.param == "sync" else BatchedBehaviourAPI()
    yield from _serve(tmp_path_factory, api, TIMEOUT)


@pytest.fixture(scope="module")
def no_timeout(tmp_path_factory):
    yield from _serve(tmp_path_factory, BehaviourAPI(), None)


def _post(url: str, body: dict, request_id: str) -> tuple[int, dict, float]:
    with httpx.Client(timeout=30) as client:  # built before the clock starts: that takes a while
        t0 = time.monotonic()
        r = client.post(url + "/predict", json=body, headers={"x-request-id": request_id})
        return r.status_code, r.json(), time.monotonic() - t0


def test_queued_and_running_requests_time_out_at_their_deadline(server, request):
    gate = server.tmp / f"gate-{request.node.callspec.id}"
    with ThreadPoolExecutor(2) as ex:
        running = ex.submit(_post, server.url, {"op": "block", "path": str(gate), "tag": "A"}, "req-A")
        wait_for(lambda: Path(str(gate) + ".started").exists() or running.done())
        assert not running.done(), running.result()
        waiting = ex.submit(_post, server.url, {"op": "echo", "tag": "B"}, "req-B")
        wait_for(lambda: len(server.pool.calls) == 2 or waiting.done())
        # B waits in the app, not in the busy worker (a worker is sent only what it can start).
        assert server.pool.scheduler.queued == 1 and server.pool.scheduler.in_flight == 1
        a_status, a_body, a_elapsed = running.result(timeout=10)
        b_status, b_body, b_elapsed = waiting.result(timeout=10)
    try:
        assert (a_status, b_status) == (504, 504)
        assert "did not complete within" in a_body["detail"] and "did not complete within" in b_body["detail"]
        assert TIMEOUT <= a_elapsed < TIMEOUT + SLACK, a_elapsed
        assert TIMEOUT <= b_elapsed < TIMEOUT + SLACK, b_elapsed
        requests = server.rids(P.REQUEST)
        cancels = server.rids(P.CANCEL)
        assert requests[b"req-A"] in cancels  # the running one was told to stop
        assert b"req-B" not in requests  # it never reached a worker:
        assert server.pool.scheduler.queued == 0  # it was dropped from the app's queue
        assert not server.pool.calls
    finally:
        gate.write_text("go")
    # The late result of A arrives and is dropped; the worker's slot is freed and it serves again.
    wait_for(server.idle, timeout=10)
    status, body, _ = _post(server.url, {"op": "echo", "tag": "C", "value": 1}, "req-C")
    assert status == 200 and body["value"] == 1
    predicted = server.predicted()
    assert "A" in predicted and "C" in predicted
    assert "B" not in predicted, "a request that expired while waiting reached predict"
    assert predicted.index("A") < predicted.index("C")
    wait_for(server.idle)


def test_fast_requests_are_unaffected(server):
    for i in range(5):
        status, body, elapsed = _post(server.url, {"op": "echo", "value": i}, f"fast-{i}")
        assert status == 200 and body["value"] == i and elapsed < TIMEOUT


@pytest.mark.slow
def test_a_timeout_of_none_waits_as_long_as_predict_takes(no_timeout):
    gate = no_timeout.tmp / "gate-none"
    assert no_timeout.app.settings.timeout is None
    with ThreadPoolExecutor(1) as ex:
        t0 = time.monotonic()
        fut = ex.submit(_post, no_timeout.url, {"op": "block", "path": str(gate), "tag": "slow"}, "slow")
        wait_for(lambda: Path(str(gate) + ".started").exists() or fut.done())
        # Well past what any default timeout in these tests uses, the request is still waiting.
        wait_for(lambda: time.monotonic() - t0 > 3 * TIMEOUT or fut.done())
        assert not fut.done(), fut.result()
        assert not no_timeout.rids(P.CANCEL)
        gate.write_text("go")
        status, body, elapsed = fut.result(timeout=10)
    assert status == 200 and body == {"released": True}
    assert elapsed > 2 * TIMEOUT
