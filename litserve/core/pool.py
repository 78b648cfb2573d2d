"""The app's side of the worker pool: the ROUTER socket, the calls waiting on it, the scheduler.

Everything here runs on the app's event loop, in callbacks, with no task of its own: the socket's
file descriptor is registered with the loop, and when it turns readable every message waiting is
read at once (ZeroMQ signals edge-triggered, so we always drain until EVENTS says empty, and check
again after sending). That is what ``zmq.asyncio`` does internally, minus a future per message; on
the request path that difference is measurable.

A request is a ``Call``: submitted, it becomes a scheduler ``Job``; the scheduler decides when it is
sent and to whom; replies are matched by request id and, only if they come from the worker that
holds that id, resolve the call.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import logging
import shutil
import tempfile
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from ..api import LitAPI
from ..errors import RequestError, ServiceUnavailable, WorkerDied
from . import protocol as P
from .metrics import Metrics
from .scheduler import Job, Scheduler
from .stepper import stepwise
from .supervisor import READY, Supervisor, WorkerHandle

logger = logging.getLogger("litserve")

# Plain ints: pyzmq's enum constants cost a Python-level enum operation on every use.
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)

NEW, STARTING, RUNNING, DRAINING, STOPPED = "new", "starting", "running", "draining", "stopped"
RETRY_START_AFTER = 30.0  # seconds before a failed start is tried again by the next request


class Call:
    """One request waiting for its worker's reply: a future for a unary call, a chunk queue for a stream."""

    __slots__ = ("rid", "job", "future", "_chunks", "_waiter")

    def __init__(self, rid: int, job: Job, stream: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.rid = rid
        self.job = job
        self.future: asyncio.Future[tuple[int, bytes, bytes]] = loop.create_future()
        self._chunks: deque[tuple[int, int, bytes, bytes]] | None = deque() if stream else None
        self._waiter: asyncio.Future[None] | None = None

    def deliver(self, kind: int, status: int, payload: bytes, tag: bytes = b"") -> None:
        """A reply arrived: (status, payload, tag) for a unary call, the next item of a stream."""
        if self._chunks is None:
            if not self.future.done():
                self.future.set_result((status, payload, tag))
            return
        self._chunks.append((kind, status, payload, tag))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
            self.future.exception()  # mark retrieved: nobody may be awaiting it any more
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
            self._waiter.exception()

    async def next_chunk(self) -> tuple[int, int, bytes, bytes]:
        """The next (kind, status, payload, tag) of a stream; raises what ``fail`` was given."""
        assert self._chunks is not None
        while not self._chunks:
            if self.future.done():
                self.future.result()  # raises the failure
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._chunks.popleft()


class Pool:
    """Workers on ``devices`` serving ``api``, reachable through ``submit``.

    ``start``/``stop`` bracket its life; ``ensure_started`` lets the first request start it when the
    app was mounted where no lifespan event arrives.
    """

    def __init__(
        self,
        api: LitAPI,
        devices: list[str],
        *,
        max_queue_size: int,
        startup_timeout: float,
        metrics: Metrics,
        log_level: int = logging.INFO,
    ) -> None:
        self.api = api
        self.devices = devices
        self.metrics = metrics
        self.state = NEW
        # A continuous-batching worker takes requests one by one into its running batch.
        batch_size = 1 if stepwise(api) else api.max_batch_size
        self.scheduler = Scheduler(batch_size, api.batch_timeout, max_queue_size)
        self.calls: dict[int, Call] = {}
        self._startup_timeout = startup_timeout
        self.log_level = log_level  # read when workers start: LitServer.run(log_level=) sets it
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._dir: str | None = None
        self._supervisor: Supervisor | None = None
        self._starting: asyncio.Future[None] | None = None
        self._drain_soon = False
        self._kicked = False
        # LitAPI.log entries from the workers go here (the loggers' queue); None drops them.
        self.on_log: Callable[[bytes], None] | None = None
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self._idle: asyncio.Event | None = None
        self.started_error: BaseException | None = None
        self._failed_at: float | None = None
        metrics.bind(
            lambda: self.scheduler.queued, lambda: len(self.calls), lambda: self.ready_workers, lambda: self.capacity
        )

    # -- life -----------------------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        """Start once; concurrent callers share the same start. Raises if starting failed."""
        if self.state in (RUNNING, DRAINING):
            return
        if self.state == STOPPED:
            raise ServiceUnavailable("the server is shutting down")
        if self._failed_at is not None and self._starting is None:
            wait = self._failed_at + RETRY_START_AFTER - time.monotonic()
            if wait > 0:
                raise ServiceUnavailable(
                    f"the model workers could not start: {self.started_error}", retry_after=max(1, round(wait))
                )
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.start())
        await asyncio.shield(self._starting)

    async def start(self) -> None:
        if self.state != NEW:
            return
        self.state = STARTING
        self._loop = loop = asyncio.get_running_loop()
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a gone worker raises instead of dropping
        sock.setsockopt(zmq.SNDHWM, 0)  # the scheduler bounds what is in flight; never block here
        sock.setsockopt(zmq.RCVHWM, 0)
        if zmq.has("ipc"):
            self._dir = tempfile.mkdtemp(prefix=P.SOCKET_DIR_PREFIX)  # 0700: only this user can connect
            address = f"ipc://{self._dir}/pool.sock"
            sock.bind(address)
        else:
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            address = f"tcp://127.0.0.1:{port}"
        self._sock = sock
        loop.add_reader(sock.FD, self._on_readable)
        _live_pools.add(self)
        self._supervisor = Supervisor(
            self.api,
            self.devices,
            address,
            startup_timeout=self._startup_timeout,
            on_exit=self._on_worker_exit,
            on_restart=self.metrics.restarts.inc,
            log_level=self.log_level,
        )
        try:
            await self._supervisor.start()
        except BaseException as exc:
            self.started_error = exc
            await self.stop(grace=0)
            # A lazily started pool (mounted app) tries again on a request after RETRY_START_AFTER.
            self.state = NEW
            self._failed_at = time.monotonic()
            self._starting = None
            raise
        self.state = RUNNING
        self._failed_at = None
        for h in self._supervisor.workers.values():
            logger.info("%-10s %-8s pid %s", h.name, h.device, h.pid)

    def begin_drain(self) -> None:
        """Refuse new requests (503) while the ones in flight finish."""
        if self.state in (NEW, STARTING, RUNNING):
            self.state = DRAINING

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight, at most ``timeout`` seconds; True if it got there."""
        if not self.calls:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self, grace: float = 30.0) -> None:
        """Let in-flight requests finish for up to ``grace`` seconds, then stop the workers."""
        if self.state == STOPPED:
            return
        self.begin_drain()
        if grace > 0:
            await self.wait_idle(grace)
        self.state = STOPPED
        for call in list(self.calls.values()):
            call.fail(ServiceUnavailable("the server is shutting down"))
        self.calls.clear()
        if self._wake is not None:
            self._wake.cancel()
        if self._supervisor is not None:
            await self._supervisor.stop(grace=max(grace, 1.0), send_stop=self._send_stop)
        self._close_socket()
        _live_pools.discard(self)

    def _close_socket(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.remove_reader(self._sock.FD)
                except Exception:  # the loop may already be shutting down
                    pass
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _kill_at_exit(self) -> None:
        if self._supervisor is not None:
            self._supervisor.kill_all_now()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- requests -------------------------------------------------------------------------------------
    def submit(self, body: bytes, request_id: bytes) -> Call:
        """Queue a request; raises ServiceUnavailable when it cannot be taken now."""
        if self.state != RUNNING:
            raise ServiceUnavailable(
                "the server is draining" if self.state == DRAINING else "the server is not running"
            )
        if self._supervisor is not None and self._supervisor.crash_looping:
            raise ServiceUnavailable("no worker is ready: workers keep failing to start", retry_after=5)
        rid = next(self._ids)
        job = Job(rid, body, request_id, time.monotonic())
        if not self.scheduler.submit(job):
            # Jobs queued earlier in this loop turn wait for the deferred dispatch (_kick); hand them to
            # free workers now, so only requests that really wait for a worker count against the limit.
            self._schedule()
            if not self.scheduler.submit(job):
                raise ServiceUnavailable(f"the queue is full ({self.scheduler.max_queue_size} requests waiting)")
        assert self._loop is not None
        call = Call(rid, job, self.api.stream, self._loop)
        self.calls[rid] = call
        self._kick()
        return call

    def cancel(self, call: Call, exc: RequestError) -> None:
        """Give up on a call (timeout, disconnect): drop it if queued, else CANCEL it on its worker."""
        if self.calls.pop(call.rid, None) is None:
            return
        call.fail(exc)
        worker = self.scheduler.cancel(call.rid, call.job)
        if worker is not None:
            self._send(worker.encode(), P.encode(P.CANCEL, [(call.rid, 0, b"")]))
        self._check_idle()

    # -- scheduling and sending -----------------------------------------------------------------------
    def _kick(self) -> None:
        """Schedule at the end of this loop turn, so what arrives together is dispatched together."""
        if not self._kicked:
            self._kicked = True
            assert self._loop is not None
            self._loop.call_soon(self._schedule)

    def _schedule(self) -> None:
        self._kicked = False
        now = time.monotonic()
        dispatches, wake_at = self.scheduler.schedule(now)
        if dispatches:
            wait = self.metrics.queue_wait
            size = self.metrics.batch_size
            messages: dict[str, list[bytes]] = {}
            for worker, jobs in dispatches:
                frames = messages.get(worker)
                if frames is None:
                    frames = messages[worker] = [P.header(P.REQUEST)]
                number = len(frames)  # distinct per batch within the message; only equality matters
                for job in jobs:
                    frames.append(P.item_head(job.rid, number & 0xFFFF, job.tag))
                    frames.append(job.payload)
                    wait.observe(now - job.enqueued_at)
                size.observe(len(jobs))
            for worker, frames in messages.items():
                self._send(worker.encode(), frames)
        if wake_at is not None and (self._wake_at is None or wake_at < self._wake_at):
            if self._wake is not None:
                self._wake.cancel()
            assert self._loop is not None
            self._wake_at = wake_at
            self._wake = self._loop.call_at(self._loop.time() + (wake_at - now), self._on_wake)

    def _on_wake(self) -> None:
        self._wake = self._wake_at = None
        self._schedule()

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.send_multipart([identity, *frames], _NOBLOCK)
        except zmq.ZMQError as exc:
            # The worker is gone (its death will be seen through its sentinel) or the socket closed.
            logger.debug("send to %r failed: %s", identity, exc)
        if not self._drain_soon and sock.getsockopt(_EVENTS) & _POLLIN:  # type: ignore[operator]
            # Sending may have consumed the readable edge: read what is waiting on the next turn.
            self._drain_soon = True
            assert self._loop is not None
            self._loop.call_soon(self._on_readable)

    def _send_stop(self, handle: WorkerHandle) -> None:
        self._send(handle.identity, P.encode(P.STOP))

    # -- receiving ------------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        self._drain_soon = False
        sock = self._sock
        if sock is None:
            return
        got = False
        try:
            while sock.getsockopt(_EVENTS) & _POLLIN:  # type: ignore[operator]
                frames = sock.recv_multipart(_NOBLOCK)
                got = True
                try:
                    self._on_message(frames)
                except Exception:  # one bad message must never stop the receive loop
                    logger.exception("dropped a message that could not be handled")
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EAGAIN:
                logger.warning("receive failed: %s", exc)
        if got:
            self._schedule()

    def _on_message(self, frames: list[bytes]) -> None:
        supervisor = self._supervisor
        handle = supervisor.by_identity(frames[0]) if supervisor is not None else None
        if handle is None:
            logger.warning("ignored a message from an unknown peer")
            return
        try:
            kind, items = P.decode(frames[1:])
        except P.ProtocolError as exc:
            logger.warning("dropped a malformed message from %s: %s", handle.name, exc)
            return
        name = handle.identity.decode()
        scheduler = self.scheduler
        if kind in P.TERMINAL:
            calls = self.calls
            for it in items:
                if not scheduler.complete(it.rid, name):
                    continue
                call = calls.pop(it.rid, None)
                if call is not None:
                    call.deliver(kind, it.status, it.payload, it.tag)
            self._check_idle()
        elif kind == P.CHUNK:
            for it in items:
                call = self.calls.get(it.rid)
                if call is not None and scheduler.holds(it.rid, name):
                    call.deliver(kind, it.status, it.payload, it.tag)
        elif kind == P.READY and items:
            assert supervisor is not None
            if handle.state != READY:
                try:
                    facts = json.loads(items[0].payload)
                    logger.debug("%s reports %s", handle.name, facts)
                except ValueError:
                    pass
                supervisor.mark_ready(handle, items[0].status)
                if handle.state == READY:
                    scheduler.add_worker(name, handle.capacity, sequential=not self.api.is_async)
        elif kind == P.LOG:
            if self.on_log is not None:
                for it in items:
                    self.on_log(it.payload)
        elif kind == P.FAILED and items:
            assert supervisor is not None
            try:
                error = json.loads(items[0].payload).get("error", "setup failed")
            except (ValueError, AttributeError):
                error = "setup failed"
            supervisor.mark_failed(handle, str(error))
        else:
            logger.warning("ignored a %r message from %s", chr(kind), handle.name)

    def _on_worker_exit(self, handle: WorkerHandle) -> None:
        # A sync worker runs what it holds in order: only its oldest batch was running.
        lost = self.scheduler.remove_worker(handle.identity.decode(), retry_waiting=not self.api.is_async)
        for rid in lost:
            call = self.calls.pop(rid, None)
            if call is not None:
                call.fail(WorkerDied(f"{handle.name} on {handle.device} exited while running this request"))
        if self.state == RUNNING:
            self._schedule()
        self._check_idle()

    def _check_idle(self) -> None:
        if self._idle is not None and not self.calls:
            self._idle.set()

    # -- views ----------------------------------------------------------------------------------------
    @property
    def ready_workers(self) -> int:
        return self._supervisor.ready_count if self._supervisor is not None else 0

    @property
    def capacity(self) -> int:
        """Requests the ready workers can run at once (not what they can hold: prefetch is not counted).

        A sync worker runs one batch at a time; an async one runs ``max_concurrency`` batches.
        """
        if self._supervisor is None:
            return 0
        per_worker = (self.api.max_concurrency if self.api.is_async else 1) * self.api.max_batch_size
        return per_worker * self._supervisor.ready_count

    def workers_info(self) -> list[dict[str, Any]]:
        if self._supervisor is None:
            return [
                {"name": f"worker-{i}", "device": d, "pid": None, "state": "not started"}
                for i, d in enumerate(self.devices)
            ]
        return [h.info() for h in self._supervisor.workers.values()]

    def __repr__(self) -> str:
        return f"<Pool {self.state} calls={len(self.calls)} {self.scheduler!r}>"


_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


@atexit.register
def _kill_live_pools() -> None:
    """A pool that was never stopped (mounted without lifespan) must not leave workers behind."""
    for pool in list(_live_pools):
        pool._kill_at_exit()
