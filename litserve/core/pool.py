"""The app's side of the worker pool: calls waiting for replies, the scheduler, the stop sequence.

Everything here runs on the app's event loop, in callbacks, with no task of its own. The ZeroMQ
socket is a ``Router`` (core/router.py); which request goes where is the ``Scheduler``'s decision
(core/scheduler.py, pure); processes and the READY handshake are the ``Supervisor``'s
(core/supervisor.py). What is left here is the glue and the policies that need all three:

- a request is a ``Call``: submitted, it becomes a scheduler ``Job``; replies are matched by request
  id and, only if they come from the worker that holds that id, resolve the call;
- a worker that dies: requests it only held go back to the queue without penalty; a request it was
  running is retried once on another worker (running alone), and if that worker dies too, it is
  answered 500 and its body's fingerprint is remembered, so a repeat of it is refused at once
  instead of killing a third worker (a *poison request* costs only itself);
- a worker that looks hung (``Scheduler.overdue``) is killed and replaced like a crashed one;
- stop has one owner and one deadline: ``begin_drain(grace)`` fixes the deadline, ``stop()``
  finishes by it (plus at most ``REAP_SECONDS`` to reap workers killed at the deadline).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import itertools
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..api import LitAPI
from ..errors import PoisonRequest, RequestError, ServiceUnavailable, WorkerDied, startup_failed
from . import protocol as P
from .call import Call
from .metrics import Metrics
from .router import Router
from .scheduler import Job, Scheduler
from .states import ExitReason, PoolState
from .stepper import stepwise
from .supervisor import Supervisor, WorkerHandle

logger = logging.getLogger("litserve")

NEW, STARTING, RUNNING, DRAINING, STOPPED = (
    PoolState.NEW,
    PoolState.STARTING,
    PoolState.RUNNING,
    PoolState.DRAINING,
    PoolState.STOPPED,
)
RETRY_START_AFTER = 30.0  # seconds before a failed start is tried again by the next request
# Mean run time under which a ``def predict`` worker gets its next request before it finishes the
# current one: there a round trip (tens of microseconds, more on a busy machine) is a real share of
# each request; above it, one shared queue in arrival order is worth more than hiding it.
FAST_WORK = 0.002
_REPLY_SUFFIX = P.REPLY_SUFFIX.decode()
POISON_MEMORY = 1024  # fingerprints of request bodies that killed two workers, most recent kept


class Pool:
    """Workers on ``devices`` serving ``api``, reachable through ``submit``.

    ``start``/``stop`` bracket its life; ``ensure_started`` lets the first request start it when the
    app was mounted where no lifespan event arrives.

    Args:
        timeout: the request timeout; with ``hung_grace`` it decides when a worker counts as hung.
        hung_grace: seconds a request may still run after its timeout before its worker is killed
            and replaced (None: never).
        heartbeat_timeout: seconds a busy worker may go without a heartbeat before it is killed and
            replaced (None: no heartbeat).
        shutdown_grace: the default grace of ``begin_drain``/``stop``.
        stream_buffer: bytes of unsent chunks a stream may have here before its worker is paused
            (PAUSE), resumed at half (``drained``); None: never paused. Only where the worker runs
            each stream in a generator of its own (not batched, not continuous batching).
        prefetch: requests a ``def predict`` worker (without batching) may hold, not started,
            behind the one it runs: revocable, and used only while requests take less than
            ``FAST_WORK`` on average. A batched API always gets one full batch; async and streaming
            workers none.
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
        timeout: float | None = None,
        hung_grace: float | None = None,
        heartbeat_timeout: float | None = None,
        shutdown_grace: float = 30.0,
        prefetch: int = 16,
        stream_buffer: int | None = None,
    ) -> None:
        self.api = api
        self.devices = devices
        self.metrics = metrics
        self.state = NEW
        prefetch_below: float | None = None
        if stepwise(api):  # continuous batching: every request it holds is generating
            self._run_slots, self._prefetch = api.max_batch_size, 0
        elif api.is_async:
            self._run_slots, self._prefetch = api.max_concurrency, 0
        elif api.stream:
            self._run_slots, self._prefetch = 1, 0
        elif api.max_batch_size > 1:
            self._run_slots, self._prefetch = 1, 1  # the next full batch, always
        else:  # the next request, only while requests are fast enough for the round trip to matter
            self._run_slots, self._prefetch, prefetch_below = 1, prefetch, FAST_WORK
        # A continuous-batching worker takes requests one by one into its running batch.
        self.scheduler = Scheduler(
            1 if stepwise(api) else api.max_batch_size,
            api.batch_timeout,
            max_queue_size,
            timeout=timeout,
            hung_grace=hung_grace,
            heartbeat_timeout=heartbeat_timeout,
            prefetch_below=prefetch_below,
        )
        self.calls: dict[int, Call] = {}
        # ``def predict`` workers whose reply socket spoke: a batch that starts at once goes there,
        # straight to the main thread, not through the reading thread (see SyncRunner).
        self._direct: set[str] = set()
        # A worker that runs several streams in one generator is never paused: one slow client would stall them all.
        pausable = stream_buffer is not None and not stepwise(api) and api.max_batch_size == 1
        self._pause_above: float = stream_buffer if pausable and stream_buffer is not None else float("inf")
        self._resume_at = (stream_buffer or 0) // 2
        self.log_level = log_level  # read when workers start: LitServer.run(log_level=) sets it
        self.shutdown_grace = shutdown_grace
        self._startup_timeout = startup_timeout
        self._heartbeat_timeout = heartbeat_timeout
        # A batch dispatched now is overdue no sooner than this (see Scheduler.overdue): no hung_grace
        # after its start, no heartbeat_timeout after its worker became busy.
        self._soonest_overdue = min(
            (t for t in (heartbeat_timeout, hung_grace if timeout is not None else None) if t is not None),
            default=float("inf"),
        )
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._router: Router | None = None
        self._supervisor: Supervisor | None = None
        self._starting: asyncio.Future[None] | None = None
        self._kicked = False
        # LitAPI.log entries from the workers go here (the loggers' queue); None drops them.
        self.on_log: Callable[[bytes], None] | None = None
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at: float | None = None
        self._idle: asyncio.Event | None = None
        self._deadline: float | None = None  # when a drain/stop must be over (time.monotonic())
        self._poison: OrderedDict[bytes, None] = OrderedDict()
        self.started_error: BaseException | None = None
        self.on_started: Callable[[], None] | None = None
        self._failed_at: float | None = None
        metrics.bind(
            lambda: self.scheduler.waiting, lambda: len(self.calls), lambda: self.ready_workers, lambda: self.capacity
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
                raise startup_failed(self.started_error or RuntimeError("unknown"), retry_after=max(1, round(wait)))
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.start())
        await asyncio.shield(self._starting)

    async def start(self) -> None:
        if self.state != NEW:
            return
        self.state = STARTING
        self._loop = loop = asyncio.get_running_loop()
        self._router = Router(loop, self._on_message, self._schedule)
        _live_pools.add(self)
        self._supervisor = Supervisor(
            self.api,
            self.devices,
            self._router.address,
            startup_timeout=self._startup_timeout,
            on_exit=self._on_worker_exit,
            on_ready=self._on_worker_ready,
            on_restart=self._on_restart,
            log_level=self.log_level,
            heartbeat_interval=min(1.0, self._heartbeat_timeout / 4) if self._heartbeat_timeout else 1.0,
        )
        try:
            await self._supervisor.start()
        except BaseException as exc:
            self.started_error = exc
            await self.stop(grace=0)
            # A lazily started pool (mounted app) tries again on a request after RETRY_START_AFTER.
            self.state = NEW
            self._deadline = None
            self._failed_at = time.monotonic()
            self._starting = None
            raise
        self.state = RUNNING
        self._failed_at = None
        if self.on_started is not None:
            self.on_started()  # the app's start banner: routes, auth, each worker with its device
        else:
            for h in self._supervisor.workers.values():
                logger.info("%-10s %-8s pid %s", h.name, h.device, h.pid)

    def begin_drain(self, grace: float | None = None) -> None:
        """Refuse new requests (503) while the ones in flight finish; the stop deadline starts now.

        ``grace`` defaults to ``shutdown_grace``. A later ``stop()`` keeps this deadline, so draining
        and stopping together take ``grace`` seconds, not twice that.
        """
        if self._deadline is None:
            self._deadline = time.monotonic() + (self.shutdown_grace if grace is None else grace)
        if self.state in (NEW, STARTING, RUNNING):
            self.state = DRAINING

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request is in flight: at most ``timeout`` seconds, or by the drain deadline
        when ``timeout`` is None. True if it got there."""
        if not self.calls:
            return True
        if timeout is None:
            timeout = self._deadline - time.monotonic() if self._deadline is not None else self.shutdown_grace
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self, grace: float | None = None) -> None:
        """The one stop sequence: drain until the deadline, answer what is left 503, stop the workers.

        The deadline is the drain's if one began, else now + ``grace`` (default ``shutdown_grace``).
        Workers still running at the deadline are killed; the whole stop ends by the deadline plus
        at most ``REAP_SECONDS``.
        """
        if self.state == STOPPED:
            return
        self.begin_drain(grace)
        await self.wait_idle()
        self.state = STOPPED
        for call in list(self.calls.values()):
            call.fail(ServiceUnavailable("the server is shutting down"))
        self.calls.clear()
        for timer in (self._wake, self._watchdog):
            if timer is not None:
                timer.cancel()
        if self._supervisor is not None:
            assert self._deadline is not None
            await self._supervisor.stop(self._deadline, send_stop=self._send_stop)
        if self._router is not None:
            self._router.close()
        _live_pools.discard(self)

    def _kill_at_exit(self) -> None:
        if self._supervisor is not None:
            self._supervisor.kill_all_now()
        if self._router is not None:
            self._router.close()

    # -- requests -------------------------------------------------------------------------------------
    def submit(self, body: bytes, request_id: bytes) -> Call:
        """Queue a request; raises ServiceUnavailable when it cannot be taken now."""
        if self.state != RUNNING:
            raise ServiceUnavailable(
                "the server is draining" if self.state == DRAINING else "the server is not running"
            )
        if self._supervisor is not None and self._supervisor.crash_looping:
            raise ServiceUnavailable("no worker is ready: workers keep failing to start", retry_after=5)
        if self._poison and _fingerprint(body) in self._poison:
            raise PoisonRequest(
                "this request body already made two workers exit while running it; it is refused without running"
            )
        rid = next(self._ids)
        job = Job(rid, body, request_id, time.monotonic())
        if not self.scheduler.submit(job):
            # Jobs queued earlier in this loop turn wait for the deferred dispatch (_kick); hand them to
            # free workers now, so only requests that really wait for a worker count against the limit.
            self._schedule()
            if not self.scheduler.submit(job):
                raise ServiceUnavailable(
                    f"the queue is full ({self.scheduler.max_queue_size} requests waiting for a worker)"
                )
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

    def drained(self, call: Call) -> None:
        """The handler took a chunk of a paused stream: its client reads, so the pause is not its
        worker hanging; once half the stream buffer is sent, the worker may go on (RESUME)."""
        batch = call.job.batch
        if batch is None or call.rid not in self.calls:
            call.paused = False
            return
        self.scheduler.progress(call.rid, batch.worker, time.monotonic())
        if call.backlog <= self._resume_at:
            call.paused = False
            self._send(batch.worker.encode(), P.encode(P.RESUME, [(call.rid, 0, b"")]))

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
        scheduler = self.scheduler
        dispatches, wake_at = scheduler.schedule(now)
        if dispatches:
            wait = self.metrics.queue_wait
            size = self.metrics.batch_size
            messages: dict[str, list[bytes]] = {}
            direct = self._direct
            for worker, jobs in dispatches:
                if worker in direct and not jobs[0].batch.held:  # type: ignore[union-attr]
                    worker += _REPLY_SUFFIX  # it starts at once: the main thread reads it itself
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
            self._arm_watchdog(now)
        if self._prefetch:
            for worker, rids in scheduler.revocations():
                self._send(worker.encode(), P.encode(P.REVOKE, [(rid, 0, b"") for rid in rids]))
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
        if self._router is not None:
            self._router.send(identity, frames)

    def _send_stop(self, handle: WorkerHandle) -> None:
        self._send(handle.identity, P.encode(P.STOP))

    # -- hung workers ---------------------------------------------------------------------------------
    def _arm_watchdog(self, now: float) -> None:
        """Check for hung workers when the next one could become overdue (nothing runs while idle)."""
        if self._watchdog_at is not None and self._watchdog_at <= now + self._soonest_overdue:
            return  # armed already, before anything dispatched now could become overdue
        _, next_at = self.scheduler.overdue(now)
        if next_at is None or (self._watchdog_at is not None and self._watchdog_at <= next_at):
            return
        if self._watchdog is not None:
            self._watchdog.cancel()
        assert self._loop is not None
        self._watchdog_at = next_at
        self._watchdog = self._loop.call_at(self._loop.time() + (next_at - now), self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = self._watchdog_at = None
        now = time.monotonic()
        hung, _ = self.scheduler.overdue(now)
        supervisor = self._supervisor
        if supervisor is not None and self.state != STOPPED:
            for name, why in hung:
                handle = supervisor.by_identity(name.encode())
                if handle is not None:
                    supervisor.kill(handle, ExitReason.HUNG, why)
        self._arm_watchdog(now)

    # -- receiving ------------------------------------------------------------------------------------
    def _on_message(self, identity: bytes, frames: list[bytes]) -> None:
        supervisor = self._supervisor
        handle = supervisor.by_identity(identity) if supervisor is not None else None
        if handle is None:
            logger.warning("ignored a message from an unknown peer")
            return
        try:
            kind, items = P.decode(frames)
        except P.ProtocolError as exc:
            logger.warning("dropped a malformed message from %s: %s", handle.name, exc)
            return
        name = handle.identity.decode()
        scheduler = self.scheduler
        if kind in P.TERMINAL:
            now = time.monotonic()
            calls = self.calls
            for it in items:
                if not scheduler.complete(it.rid, name, now):
                    continue
                call = calls.pop(it.rid, None)
                if call is not None:
                    call.deliver(kind, it.status, it.payload, it.tag)
            self._check_idle()
        elif kind == P.CHUNK:
            now = time.monotonic()
            for it in items:
                call = self.calls.get(it.rid)
                if call is not None and scheduler.progress(it.rid, name, now):
                    call.deliver(kind, it.status, it.payload, it.tag)
                    if call.backlog > self._pause_above and not call.paused:
                        call.paused = True  # its client reads slower than the worker produces
                        self.metrics.stream_pauses.inc()
                        self._send(handle.identity, P.encode(P.PAUSE, [(it.rid, 0, b"")]))
        elif kind == P.REVOKED:
            now = time.monotonic()
            for it in items:
                scheduler.revoked(it.rid, name, now)
        elif kind == P.HEARTBEAT:
            scheduler.beat(name, time.monotonic())
            if identity.endswith(P.REPLY_SUFFIX):  # a def predict worker's reply socket is connected
                self._direct.add(name)
        elif kind in (P.READY, P.FAILED):
            assert supervisor is not None
            supervisor.handshake(handle, kind, items)
        elif kind == P.LOG:
            if self.on_log is not None:
                for it in items:
                    self.on_log(it.payload)
        else:
            logger.warning("ignored a %r message from %s", chr(kind), handle.name)

    def _on_worker_ready(self, handle: WorkerHandle) -> None:
        self.scheduler.add_worker(
            handle.identity.decode(), self._run_slots, prefetch=self._prefetch, now=time.monotonic()
        )
        if self.state in (RUNNING, DRAINING):
            self._kick()

    def _on_worker_exit(self, handle: WorkerHandle) -> None:
        """Held requests went back to the queue (scheduler); decide for the ones it was running."""
        running = self.scheduler.remove_worker(handle.identity.decode())
        self._direct.discard(handle.identity.decode())
        retry: list[Job] = []
        for job in running:
            call = self.calls.get(job.rid)
            if call is None:
                continue  # cancelled already
            request_id = job.tag.decode("ascii", "replace")
            if call.streamed:  # part of its answer went out: running it again would repeat it
                self.calls.pop(job.rid)
                call.fail(WorkerDied(f"{handle.name} on {handle.device} exited while streaming this request"))
            elif self.state == STOPPED:
                self.calls.pop(job.rid)
                call.fail(ServiceUnavailable("the server is shutting down"))
            elif not job.retried:
                logger.warning(
                    "request %s: %s on %s exited while running it; retrying it once on another worker",
                    request_id,
                    handle.name,
                    handle.device,
                )
                retry.append(job)
            else:
                self.calls.pop(job.rid)
                self._remember_poison(job.payload)
                logger.error(
                    "request %s: a second worker (%s on %s) exited while running it; answering 500, and "
                    "refusing the same body from now on",
                    request_id,
                    handle.name,
                    handle.device,
                )
                call.fail(
                    PoisonRequest(
                        f"the worker running this request exited ({handle.name} on {handle.device}), and so did "
                        "the one it was retried on; it is not retried again"
                    )
                )
        self.scheduler.retry(retry)
        if self.state in (RUNNING, DRAINING):
            self._schedule()
        self._check_idle()

    def _on_restart(self, reason: ExitReason) -> None:
        self.metrics.restarts.labels(reason.value).inc()

    def _remember_poison(self, body: bytes) -> None:
        self._poison[_fingerprint(body)] = None
        if len(self._poison) > POISON_MEMORY:
            self._poison.popitem(last=False)

    def _check_idle(self) -> None:
        if self._idle is not None and not self.calls:
            self._idle.set()

    # -- views ----------------------------------------------------------------------------------------
    @property
    def ready_workers(self) -> int:
        return self._supervisor.ready_count if self._supervisor is not None else 0

    @property
    def capacity(self) -> int:
        """Requests the ready workers can run at once (what they can start, not what they may hold).

        A sync worker runs one batch at a time; an async one ``max_concurrency`` batches; a
        continuous-batching one ``max_batch_size`` requests.
        """
        if self._supervisor is None:
            return 0
        per_worker = self._run_slots * self.scheduler.max_batch_size
        return per_worker * self._supervisor.ready_count

    @property
    def free_slots(self) -> int:
        """Batches the ready workers could start right now."""
        return self.scheduler.free_run_slots

    def workers_info(self) -> list[dict[str, Any]]:
        if self._supervisor is None:
            return [
                {"name": f"worker-{i}", "device": d, "pid": None, "state": "not started"}
                for i, d in enumerate(self.devices)
            ]
        slots = self.scheduler.workers
        info = []
        for h in self._supervisor.workers.values():
            row = h.info()
            w = slots.get(h.identity.decode())
            row["busy"] = w.busy if w is not None else 0
            info.append(row)
        return info

    def __repr__(self) -> str:
        return f"<Pool {self.state.value} calls={len(self.calls)} {self.scheduler!r}>"


def _fingerprint(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


@atexit.register
def _kill_live_pools() -> None:
    """A pool that was never stopped (mounted without lifespan) must not leave workers behind."""
    for pool in list(_live_pools):
        pool._kill_at_exit()
