"""The blocking worker loop (SyncRunner) in a thread of the test process, over inproc:// with a
ROUTER (the app's side) and the worker's two DEALERs (messages in, replies out). No process is spawned."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
import zmq
from apis_core import AsyncEchoAPI, AsyncThreadLogAPI, RecordingAPI, ThreadLogAPI
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls
from litserve.core import protocol as P
from litserve.core.worker import CANCELLED, AsyncRunner, SyncRunner

_addresses = itertools.count()


class Loop:
    """The app's side of one worker loop: send frames to it, read its replies."""

    def __init__(self, ctx: zmq.Context) -> None:
        addr = f"inproc://litserve-test-worker-{next(_addresses)}"
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(addr)
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.IDENTITY, b"w0")
        self.dealer.connect(addr)
        # What the real worker does before its loop: say READY, so the ROUTER knows its identity.
        self.dealer.send_multipart(P.encode(P.READY, [(0, 1, b"{}")]))
        assert self.router.poll(5000), "no READY from the dealer"
        identity, *frames = self.router.recv_multipart()
        assert identity == b"w0" and P.decode(frames)[0] == P.READY
        self.out = ctx.socket(zmq.DEALER)  # the main thread's reply socket
        self.out.setsockopt(zmq.LINGER, 0)
        self.out.setsockopt(zmq.IDENTITY, b"w0" + P.REPLY_SUFFIX)
        self.out.connect(addr)
        # As the real worker does: a first message on the reply socket, after which the app may send
        # there the requests that start at once (so the ROUTER knows that identity too).
        self.out.send_multipart(P.encode(P.HEARTBEAT))
        assert self.router.poll(5000), "no hello from the reply socket"
        assert self.router.recv_multipart()[0] == b"w0" + P.REPLY_SUFFIX
        self.api = RecordingAPI()
        self.api.setup("cpu")
        self.runner = SyncRunner(self.api, self.dealer, self.out)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sync-runner", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # surfaced by the test, not swallowed by the thread
            self.error = exc

    def send(self, *frames: bytes, to: bytes = b"w0") -> None:
        self.router.send_multipart([to, *frames])

    def request(self, rid: int, body: object, tag: bytes = b"", direct: bool = False) -> None:
        """REQUEST ``rid``; ``direct``: to the reply socket, as the app sends a batch that starts at once."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        to = b"w0" + P.REPLY_SUFFIX if direct else b"w0"
        self.send(P.header(P.REQUEST), P.item_head(rid, 0, tag or b"req-%d" % rid), raw, to=to)

    def cancel(self, rid: int) -> None:
        self.send(*P.encode(P.CANCEL, [(rid, 0, b"")]))

    def stop(self) -> None:
        self.send(*P.encode(P.STOP))

    def replies(self, n: int, timeout: float = 5.0) -> dict[int, tuple[int, int, bytes]]:
        """The next ``n`` terminal replies, by request id: (kind, status, payload)."""
        got: dict[int, tuple[int, int, bytes]] = {}
        while len(got) < n:
            assert self.router.poll(int(timeout * 1000)), f"only {len(got)} of {n} replies arrived: {got}"
            identity, *frames = self.router.recv_multipart()
            assert identity in (b"w0", b"w0" + P.REPLY_SUFFIX)
            kind, items = P.decode(frames)
            assert kind in P.TERMINAL, f"unexpected {chr(kind)!r} message"
            for it in items:
                assert it.rid not in got, f"two terminal replies for request {it.rid}"
                got[it.rid] = (kind, it.status, it.payload)
        return got

    def nothing_more(self, timeout: float = 0.2) -> bool:
        return not self.router.poll(int(timeout * 1000))


@pytest.fixture
def loop() -> Iterator[Loop]:
    ctx = zmq.Context()
    lp = Loop(ctx)
    try:
        yield lp
    finally:
        lp.api.release.set()
        if lp.thread.is_alive():
            lp.stop()
            lp.thread.join(10)
        alive = lp.thread.is_alive()
        if not alive:  # as the worker process does: the reading thread closes its socket on ETERM
            lp.out.close()
            lp.router.close()
            ctx.term()
        assert not alive, "the worker loop did not stop"
        assert lp.error is None, f"the worker loop raised {lp.error!r}"


def test_request_gets_its_result(loop):
    loop.request(7, {"value": 3})
    assert loop.replies(1) == {7: (P.RESULT, 200, b'{"echo":3}')}
    assert loop.api.calls == [{"value": 3}]


def test_every_request_gets_exactly_one_reply_in_order_of_work(loop):
    for rid in range(1, 11):
        loop.request(rid, {"value": rid})
    got = loop.replies(10)
    assert {rid: json.loads(p) for rid, (_, _, p) in got.items()} == {r: {"echo": r} for r in range(1, 11)}
    assert [c["value"] for c in loop.api.calls] == list(range(1, 11))
    assert loop.nothing_more()


def test_user_errors_become_replies_and_the_loop_lives_on(loop):
    loop.request(1, {"op": "raise"})
    loop.request(2, b"{not json")
    loop.request(3, {"value": "after"})
    got = loop.replies(3)
    assert got[1][1] == 500 and json.loads(got[1][2]) == {"detail": "ValueError: refused"}
    assert got[2][1] == 400 and "not valid JSON" in json.loads(got[2][2])["detail"]
    assert got[3] == (P.RESULT, 200, b'{"echo":"after"}')
    assert len(loop.api.calls) == 2  # the bad JSON never reached predict


def test_cancel_of_a_queued_item_is_answered_499_and_never_predicted(loop):
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)
    loop.request(2, {"value": "cancelled"})
    loop.cancel(2)
    loop.request(3, {"value": "kept"})
    wait_for(lambda: 2 in loop.runner.cancelled, timeout=5)  # read by the reading thread while 1 runs
    loop.api.release.set()
    got = loop.replies(3)
    assert got[1][:2] == (P.RESULT, 200)
    assert got[2] == (P.RESULT, CANCELLED, b"")
    assert got[3] == (P.RESULT, 200, b'{"echo":"kept"}')
    assert [c.get("value") for c in loop.api.calls] == [None, "kept"]
    assert loop.nothing_more()
    assert not loop.runner.known and not loop.runner.cancelled  # nothing left behind


def test_cancel_of_the_running_item_still_gets_one_terminal_reply(loop):
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)
    loop.cancel(1)
    loop.api.release.set()
    got = loop.replies(1)
    assert got[1][0] == P.RESULT  # the app drops it; what matters is that the slot is freed
    assert loop.nothing_more()
    assert not loop.runner.known and not loop.runner.cancelled


def test_cancel_for_an_unknown_or_finished_id_is_ignored(loop):
    loop.cancel(5)  # never sent: must not poison a later request with that id
    loop.request(5, {"value": 5})
    assert loop.replies(1)[5][1] == 200
    loop.cancel(5)  # already answered
    assert loop.nothing_more()
    loop.request(6, {"value": 6})
    assert loop.replies(1)[6][1] == 200


@pytest.mark.parametrize(
    "frames",
    [
        [b"junk"],
        [],
        [bytes((P.VERSION + 1, P.REQUEST)), P.item_head(1), b"{}"],
        [bytes((P.VERSION, ord("Z")))],
        [P.header(P.REQUEST), b"short", b"{}"],
        [P.header(P.REQUEST), P.item_head(1)],
    ],
    ids=["garbage", "empty", "version", "kind", "short-head", "unpaired"],
)
def test_malformed_frame_is_dropped_and_the_loop_goes_on(loop, caplog, frames):
    caplog.set_level(logging.WARNING, logger="litserve.worker")
    if frames:
        loop.send(*frames)
    else:
        loop.router.send_multipart([b"w0", b""])  # identity then one empty frame
    loop.request(2, {"value": "fine"})
    assert loop.replies(1) == {2: (P.RESULT, 200, b'{"echo":"fine"}')}
    assert loop.api.calls == [{"value": "fine"}]
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_stop_ends_the_loop(loop):
    loop.stop()
    loop.thread.join(5)
    assert not loop.thread.is_alive()
    assert loop.error is None


def test_stop_lets_received_work_finish_first(loop):
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)
    loop.request(2, {"value": 2})
    loop.stop()
    loop.api.release.set()
    got = loop.replies(2)
    assert got[1][1] == 200 and got[2] == (P.RESULT, 200, b'{"echo":2}')
    loop.thread.join(5)
    assert not loop.thread.is_alive()


def _next_message(loop: Loop, timeout: float = 5.0) -> tuple[int, list[P.Item]]:
    assert loop.router.poll(int(timeout * 1000)), "no message from the worker loop"
    identity, *frames = loop.router.recv_multipart()
    return P.decode(frames)


def test_revoke_gives_back_a_held_request_while_predict_still_runs(loop):
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)
    loop.request(2, {"value": "held"})
    loop.send(*P.encode(P.REVOKE, [(2, 0, b"")]))
    # Request 1 is still inside predict (blocked): the reading thread gives 2 back anyway, at once,
    # so the app can run it on another worker instead of waiting for this one.
    kind, items = _next_message(loop)
    assert kind == P.REVOKED and [it.rid for it in items] == [2]
    assert not loop.api.release.is_set()
    loop.api.release.set()
    kind, items = _next_message(loop)
    assert kind == P.RESULT and [(it.rid, it.status) for it in items] == [(1, 200)]
    assert [c.get("value") for c in loop.api.calls] == [None]  # the given-back request never ran here
    assert loop.nothing_more()
    assert not loop.runner.known


def test_cancel_is_seen_while_predict_runs(loop):
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)
    loop.request(2, {"value": 2})
    loop.cancel(2)
    wait_for(lambda: 2 in loop.runner.cancelled, timeout=5)  # marked by the reading thread while 1 runs
    loop.api.release.set()
    got = loop.replies(2)
    assert got[2] == (P.RESULT, CANCELLED, b"") and [c.get("value") for c in loop.api.calls] == [None]


def test_revoke_of_a_request_that_started_is_ignored(loop):
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)
    loop.send(*P.encode(P.REVOKE, [(1, 0, b"")]))
    loop.api.release.set()
    assert loop.replies(1)[1][:2] == (P.RESULT, 200)  # it ran to the end; no REVOKED for it
    assert loop.nothing_more()


def test_a_finished_request_is_answered_while_the_next_one_runs(loop):
    first, second = loop.api.gate("a"), loop.api.gate("b")
    loop.request(1, {"op": "hold", "key": "a"})
    assert first[0].wait(5)
    loop.request(2, {"op": "hold", "key": "b"})  # sent ahead (prefetch) while 1 runs
    wait_for(lambda: loop.runner.pending, timeout=5)
    first[1].set()
    assert second[0].wait(5)  # 2 is inside predict now
    assert loop.replies(1)[1][:2] == (P.RESULT, 200)  # 1's answer did not wait for 2 to finish
    second[1].set()
    assert loop.replies(1)[2][:2] == (P.RESULT, 200)


def test_async_request_cancelled_before_it_starts_still_gets_its_one_reply():
    """A REQUEST and its CANCEL read in the same pass: the request's task is cancelled before its
    first step; the runner answers it anyway (a 499 marker), so the app frees its slot."""
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://litserve-test-async-cancel")
    dealer.setsockopt(zmq.IDENTITY, b"w0")
    dealer.connect("inproc://litserve-test-async-cancel")
    dealer.send_multipart(P.encode(P.READY, [(0, 4, b"{}")]))
    assert router.poll(5000)
    router.recv_multipart()
    api = AsyncEchoAPI(max_concurrency=4)
    api.setup("cpu")
    runner = AsyncRunner(api, dealer)
    # Both are waiting before the loop reads anything, so its first pass reads them together.
    router.send_multipart([b"w0", *P.encode(P.REQUEST, [(1, 0, b'{"value": 1}', b"req-1")])])
    router.send_multipart([b"w0", *P.encode(P.CANCEL, [(1, 0, b"")])])
    thread = threading.Thread(target=lambda: asyncio.run(runner.run()), daemon=True)
    thread.start()
    try:
        assert router.poll(5000), "no reply for the cancelled request"
        identity, *frames = router.recv_multipart()
        kind, items = P.decode(frames)
        assert (kind, [(it.rid, it.status) for it in items]) == (P.RESULT, [(1, CANCELLED)])
        assert not runner.tasks and not runner.batches
        assert api.calls == []  # it never ran
    finally:
        router.send_multipart([b"w0", *P.encode(P.STOP)])
        thread.join(10)
        assert not thread.is_alive()
        router.close()
        dealer.close()
        ctx.term()


def test_a_request_sent_to_the_reply_socket_runs_like_one_sent_to_the_reading_thread(loop):
    loop.request(1, {"value": "direct"}, direct=True)
    assert loop.replies(1) == {1: (P.RESULT, 200, b'{"echo":"direct"}')}
    loop.request(2, {"op": "block"}, direct=True)
    assert loop.api.entered.wait(5)
    loop.request(3, {"value": "held"})  # held behind it, through the reading thread
    loop.api.release.set()
    got = loop.replies(2)
    assert got[3] == (P.RESULT, 200, b'{"echo":"held"}')
    assert [c.get("value") for c in loop.api.calls] == ["direct", None, "held"]


def test_a_cancel_that_overtakes_its_direct_request_is_honoured(loop):
    # The app sends a request that starts at once to the reply socket and its CANCEL to the reading
    # thread's: the CANCEL can be read first. The request must still not run.
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)  # the main thread is busy: request 2 will wait, unread, on ``out``
    loop.cancel(2)
    wait_for(lambda: 2 in loop.runner.early_cancels)
    loop.request(2, {"value": "cancelled before it was read"}, direct=True)
    loop.api.release.set()
    got = loop.replies(2)
    assert got[2] == (P.RESULT, CANCELLED, b"")
    assert [c.get("value") for c in loop.api.calls] == [None]  # only the blocked one ran


def test_a_direct_request_runs_before_a_held_one_the_reading_thread_queued_first(loop):
    # The app sends a batch that starts at once to the reply socket, and one it holds behind it to
    # the reading thread's, often in the same turn. The two sockets are not ordered with each other:
    # the reading thread may queue the held one before the main thread reads the first. (Without a
    # blocked predict this happened in about one case in four, over ipc.) The first still runs first.
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)  # the main thread is busy: it reads nothing new meanwhile
    loop.request(2, {"value": "direct"}, direct=True)
    loop.request(3, {"value": "held"})
    wait_for(lambda: loop.runner.pending)  # 3 queued by the reading thread; 2 not read yet
    loop.api.release.set()
    got = loop.replies(3)
    assert {rid: status for rid, (_, status, _) in got.items()} == {1: 200, 2: 200, 3: 200}
    assert [c.get("value") for c in loop.api.calls] == [None, "direct", "held"]


def test_an_early_cancel_is_dropped_once_honoured_and_at_most_the_last_256_are_kept(loop):
    # Stale CANCELs (for requests answered already) pile up over a worker's life; each request read
    # on the reply socket is looked up among them, so only the last 256 are kept, and one that was
    # honoured leaves.
    for rid in range(1000, 1300):
        loop.cancel(rid)
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)
    loop.cancel(2)
    wait_for(lambda: 2 in loop.runner.early_cancels)
    assert len(loop.runner.early_cancels) == 256 and 1000 not in loop.runner.early_cancels
    loop.request(2, {"value": "cancelled before it was read"}, direct=True)
    loop.api.release.set()
    assert loop.replies(2)[2] == (P.RESULT, CANCELLED, b"")
    assert 2 not in loop.runner.early_cancels


class _Ticks(ls.Logger):
    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[int] = []

    def process(self, key, value):
        if key == "tick":
            self.ticks.append(value)


@pytest.mark.parametrize("api", [ThreadLogAPI, AsyncThreadLogAPI], ids=["sync", "async"])
def test_log_from_a_thread_of_the_users_own_reaches_the_loggers_and_requests_are_unharmed(api):
    # A worker's sockets belong to one thread each; a LitAPI.log from another thread (a monitor the
    # user started) was sent on the socket the requests and replies use, mixing its frames with theirs:
    # a request or its reply was lost (504) or the worker crashed.
    ticks = _Ticks()
    app = ls.create_app(api(), accelerator="cpu", devices=1, timeout=10, loggers=ticks)
    with ThreadServer(app, ready=True) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/predict", json={"logs": "start"}).status_code == 200
        for i in range(300):
            assert client.post("/predict", json={"value": i}).json() == {"echo": i}
        sent = client.post("/predict", json={"logs": "stop"}).json()["sent"]
        wait_for(lambda: len(ticks.ticks) >= sent, timeout=30)
        assert ticks.ticks == list(range(sent))


def test_stop_lets_a_request_waiting_on_the_reply_socket_finish_first(loop):
    loop.request(1, {"op": "block"})
    assert loop.api.entered.wait(5)
    loop.request(2, {"value": "direct"}, direct=True)
    loop.stop()
    wait_for(lambda: loop.runner.stopping)  # STOP read before the main thread read request 2
    loop.api.release.set()
    got = loop.replies(2)
    assert got[1][1] == 200 and got[2] == (P.RESULT, 200, b'{"echo":"direct"}')
    loop.thread.join(5)
    assert not loop.thread.is_alive()
