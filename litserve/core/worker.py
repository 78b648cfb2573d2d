"""The worker process: one device, one DEALER socket, the user's hooks.

It is spawned (never forked, so CUDA is safe), runs ``setup(device)`` once, reports READY with its
capacity, then serves REQUEST frames until STOP or until its parent dies. Every request it receives
gets exactly one terminal reply (RESULT or END), even a cancelled one, so the app's count of what
each worker holds is always exact. User exceptions become error replies; the worker lives on.

Two loops: a plain blocking loop for ``def predict`` (nothing to interleave but CANCEL checks between
requests and between chunks), and an asyncio loop for ``async def predict`` that runs up to
``max_concurrency`` requests at once and cancels a request's task on CANCEL. Both run the user's
hooks through the same ``Pipeline`` (core/pipeline.py); only how a step is called differs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from ..api import LitAPI
from . import hooks, logs, wire
from . import protocol as P
from .inbox import Inbox, decode
from .pipeline import CANCELLED, Pipeline, run_async, run_sync
from .protocol import SOCKET_DIR_PREFIX
from .stepper import StepRunner, stepwise

logger = logging.getLogger("litserve.worker")

__all__ = ("CANCELLED", "AsyncRunner", "SyncRunner", "WorkerSpec", "main")


@dataclass
class WorkerSpec:
    """Everything a worker needs, handed over once by multiprocessing's spawn (never over the socket)."""

    api: LitAPI
    address: str
    identity: bytes
    device: str
    name: str
    log_level: int = logging.INFO
    heartbeat_interval: float | None = None  # seconds between heartbeats; None sends none


def main(spec: WorkerSpec) -> None:
    """Entry point of the spawned process."""
    # Ctrl-C and a process manager's group-wide SIGTERM reach us too; the app drains and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent(spec.address)
    logs.configure_worker(spec.name, spec.log_level)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, spec.identity)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(spec.address)
    api = spec.api
    # A ``def predict`` worker reads the app's messages on a thread of its own (see SyncRunner) and
    # sends its replies from the main thread on a second socket: a ZeroMQ socket belongs to one thread.
    out = None
    if not (stepwise(api) or api.is_async):
        out = ctx.socket(zmq.DEALER)
        out.setsockopt(zmq.IDENTITY, spec.identity + P.REPLY_SUFFIX)
        out.setsockopt(zmq.LINGER, 1000)
        out.setsockopt(zmq.SNDHWM, 0)
        out.setsockopt(zmq.RCVHWM, 0)
        out.connect(spec.address)
        wire.send(out, P.encode(P.HEARTBEAT))  # the app may now send requests that start at once here
    replies = out if out is not None else sock
    side = SideSocket(spec.address, spec.identity + P.HEARTBEAT_SUFFIX)
    hooks.install_log_sink(api, log_sender(lambda frames: wire.send(replies, frames), side))
    callbacks = hooks.callback_runner(api)
    try:
        _select_device(spec.device)
        try:
            api.device = spec.device  # type: ignore[attr-defined]  # LitServe sets it; its docs' hooks read it
        except AttributeError:  # a read-only ``device`` property of the user's own
            pass
        if callbacks is not None:
            callbacks.trigger_event("on_before_setup", lit_api=api)
        api.setup(spec.device)
        if callbacks is not None:
            callbacks.trigger_event("on_after_setup", lit_api=api)
    except BaseException as exc:
        logger.error("setup(%r) failed:\n%s", spec.device, traceback.format_exc())
        detail = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=20)}
        wire.send(sock, P.encode(P.FAILED, [(0, 0, json.dumps(detail).encode())]))
        sock.close(linger=2000)
        if out is not None:
            out.close(linger=0)
        ctx.term()
        sys.exit(1)
    if stepwise(api):  # continuous batching: holds up to max_batch_size streams, all generating
        capacity = api.max_batch_size
    else:
        capacity = api.max_concurrency if api.is_async else 1  # requests it runs at once
    facts = {"pid": os.getpid(), "device": spec.device}
    wire.send(sock, P.encode(P.READY, [(0, capacity, json.dumps(facts).encode())]))
    _start_heartbeat(side, spec.heartbeat_interval or 1.0)
    if out is not None:
        runner: SyncRunner | None = None
        try:
            runner = SyncRunner(api, sock, out)
            runner.run()
        finally:
            out.close(linger=1000)
            if runner is None or not runner.reading:
                sock.close(linger=1000)
            ctx.term()  # the reading thread's receive ends (ETERM), and it closes its socket
        return
    try:
        if stepwise(api):
            StepRunner(api, sock).run()
        else:
            asyncio.run(AsyncRunner(api, sock, side).run())
    finally:
        sock.close(linger=1000)
        ctx.term()


def _exit_with_parent(address: str) -> None:
    """Exit as soon as the app process is gone, so a ``kill -9`` of the server leaves no orphan.

    A parent that died without its shutdown also left its private socket directory behind; the
    workers remove it on the way out (any of them may get there first).
    """
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        if address.startswith("ipc://"):
            directory = os.path.dirname(address[len("ipc://") :])
            if os.path.basename(directory).startswith(SOCKET_DIR_PREFIX):
                shutil.rmtree(directory, ignore_errors=True)
        os._exit(0)

    threading.Thread(target=watch, name="litserve-parent-watch", daemon=True).start()


class SideSocket:
    """The worker's socket for the threads that own none: the heartbeat's, and any thread of the
    user's that calls ``LitAPI.log`` (identity ``<identity>/hb``).

    A ZeroMQ socket belongs to one thread, and a message's frames sent from two threads at once mix:
    a log sent from a user's thread on the socket that carries requests and replies cost a request
    (or its reply) now and then. Here every send holds a lock. Its own context, never terminated:
    the main thread's ``ctx.term()`` would wait for this socket, which a thread may be using, forever.
    Connected on first use.
    """

    def __init__(self, address: str, identity: bytes) -> None:
        self.address = address
        self.identity = identity
        self._lock = threading.Lock()
        self._sock: zmq.Socket | None = None

    def send(self, frames: list[bytes]) -> None:
        with self._lock:
            sock = self._sock
            if sock is None:
                sock = self._sock = zmq.Context().socket(zmq.DEALER)
                sock.setsockopt(zmq.IDENTITY, self.identity)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 0)
                sock.connect(self.address)
            wire.send(sock, frames)


def log_sender(own: Callable[[list[bytes]], object], side: SideSocket | None) -> Callable[[list[bytes]], None]:
    """How ``LitAPI.log`` sends: with ``own`` from the thread that calls it here (the one that runs the
    hooks and owns the socket ``own`` sends on), through ``side`` from any other thread."""
    owner = threading.get_ident()

    def send(frames: list[bytes]) -> None:
        if side is None or threading.get_ident() == owner:
            own(frames)
        else:
            side.send(frames)

    return send


def _start_heartbeat(side: SideSocket, interval: float) -> None:
    """Send HEARTBEAT every ``interval`` seconds from a thread of its own, on ``side``.

    A worker that is stopped (SIGSTOP) or whose main thread holds the GIL in a call that never
    returns goes quiet, and the app replaces it.
    """

    def beat() -> None:
        never = threading.Event()
        frames = P.encode(P.HEARTBEAT)
        while True:
            side.send(frames)
            never.wait(interval)  # the pacing of the heartbeat, not a synchronisation

    threading.Thread(target=beat, name="litserve-heartbeat", daemon=True).start()


def _select_device(device: str) -> None:
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(int(device.split(":", 1)[1]))


class SyncRunner(Inbox):
    """The blocking loop for ``def predict``: runs what it holds in the order it arrived.

    The app sends it what it can start (see core/scheduler.py), plus, while the work is fast,
    prefetched batches behind it. Those must stay movable: if another worker goes idle, the app takes
    them back (REVOKE), and the answer cannot wait for a ``predict`` that may run for minutes. So the
    app's messages are read by a thread of their own (``_read``), which queues held requests, marks
    cancellations and gives back revoked batches at once, while the main thread runs ``predict`` and
    sends replies on its own socket (``out``). Which thread gets a batch first (to start it, or to
    give it back) is decided under one lock, so no request both runs and goes back.

    A batch the app sends to a free run slot can never be revoked, so it comes straight to the main
    thread on ``out`` instead: an idle worker wakes one thread per request, not two (at one
    connection, the hop through the reading thread was a tenth of the added latency). The main
    thread waits on ``out`` and on a pipe the reading thread writes to when it queued something. A
    batch's replies leave as soon as it is done (one message for the batch): holding them for the
    next batch could hold them for as long as that batch's ``predict`` runs.
    """

    def __init__(self, api: LitAPI, sock: zmq.Socket, out: zmq.Socket) -> None:
        super().__init__(sock)  # read, and REVOKED sent, by the reading thread only
        self.out = out  # replies, sent by the main thread only
        self.pipeline = Pipeline(api, self._emit)
        self.pending: deque[list[P.Item]] = deque()
        self._woken, self._waker = os.pipe()  # the reading thread's "something to do" for the main thread
        os.set_blocking(self._woken, False)
        os.set_blocking(self._waker, False)
        self.poller = zmq.Poller()
        self.poller.register(out, zmq.POLLIN)
        self.poller.register(self._woken, zmq.POLLIN)
        self._pipe_users = 2  # the main thread and the reading thread
        self.outbox: list[P.Reply] = []
        self.reading = False  # the reading thread runs (and owns ``sock``)

    def run(self) -> None:
        threading.Thread(target=self._read, name="litserve-inbox", daemon=True).start()
        self.reading = True
        pending, lock, out = self.pending, self.lock, self.out
        try:
            while True:
                # A batch on ``out`` goes first: the app sends one there only while it counts nothing
                # else on this worker, so every batch the reading thread queued was sent after it (the
                # two sockets are not ordered with each other: it may have queued one already).
                if wire.readable(out):
                    self._take_direct()
                with lock:
                    batch = pending.popleft() if pending else None
                if batch is None:
                    if self.stopping:
                        break
                    # Blocks (without the GIL) for a request on ``out``, or a wake; the pipe is read
                    # only when it was the wake (most wakes are a request, and a read would fail).
                    if any(fd == self._woken for fd, _ in self.poller.poll()):
                        try:
                            os.read(self._woken, 4096)
                        except BlockingIOError:
                            pass
                    continue
                self._run(batch)
                self._flush()
        finally:
            self._done_with_pipe()

    def _done_with_pipe(self) -> None:
        """Each thread calls this once, at its end; the second closes the pipe (no write after close)."""
        with self.lock:
            self._pipe_users -= 1
            if self._pipe_users:
                return
        os.close(self._woken)
        os.close(self._waker)

    def _take_direct(self) -> None:
        """Queue the requests the app sent straight to ``out`` (a free run slot's), ahead of the
        held batches the reading thread queued (those were sent after them)."""
        out = self.out
        direct: list[list[P.Item]] = []
        while wire.readable(out):
            message = decode(wire.recv(out, wire.NOBLOCK))
            if message is None:
                continue
            kind, items = message
            if kind != P.REQUEST:
                logger.warning("ignored a %r message sent to the reply socket", chr(kind))
                continue
            self.known.update(it.rid for it in items)
            with self.lock:
                early = self.early_cancels
                if early:  # its CANCEL came first, on the reading thread's socket
                    for it in items:
                        if early.pop(it.rid, False) is None:
                            self.cancelled.add(it.rid)
            direct.extend(P.split_batches(items))
        if direct:
            with self.lock:
                self.pending.extendleft(reversed(direct))

    def _wake(self) -> None:
        try:
            os.write(self._waker, b"\0")
        except BlockingIOError:  # the pipe is full of wakes already: the main thread will look
            pass

    # -- the reading thread ----------------------------------------------------------------------------
    def _read(self) -> None:
        while True:
            try:
                self.wait()
            except zmq.ZMQError as exc:  # the context was terminated (the worker is exiting), or worse
                if exc.errno != zmq.ETERM:
                    logger.error("the worker can no longer read the app's messages: %s", exc)
                break
            except Exception:  # one bad message must not stop the worker from hearing the next
                logger.exception("a message from the app could not be handled")
        self.sock.close(linger=1000)
        self.stopping = True  # nothing more can arrive: the main thread finishes what it holds
        with self.flow:
            self.closed = True  # a paused stream can no longer be resumed: it goes on
            self.flow.notify_all()
        self._wake()
        self._done_with_pipe()

    def accept(self, items: list[P.Item]) -> None:
        batches = P.split_batches(items)
        with self.lock:
            self.pending.extend(batches)
        self._wake()

    def revoke(self, rids: set[int]) -> None:
        """Give back the pending batches named in ``rids`` (a batch that started is not pending)."""
        with self.lock:
            back = [batch for batch in self.pending if batch[0].rid in rids]
            for batch in back:
                self.pending.remove(batch)
        if back:
            self.send(P.REVOKED, [(it.rid, 0, b"") for batch in back for it in batch])

    def _handle(self, frames: list[bytes]) -> None:
        super()._handle(frames)
        if self.stopping:
            self._wake()

    # -- the main thread -------------------------------------------------------------------------------
    def _send_out(self, kind: int, replies: list[P.Reply]) -> None:
        """Send from the main thread: what finished earlier leaves first."""
        self._flush()
        if kind != P.CHUNK:
            self._forget(replies)
        wire.send(self.out, P.encode(kind, replies))

    def _reply(self, replies: list[P.Reply]) -> None:
        """Queue terminal RESULT replies; they leave when the batch is done."""
        self._forget(replies)
        self.outbox.extend(replies)

    def _flush(self) -> None:
        if self.outbox:
            wire.send(self.out, P.encode(P.RESULT, self.outbox))
            self.outbox = []

    def _run(self, items: list[P.Item]) -> None:
        replies: list[P.Reply] = []
        live = items
        if self.cancelled:
            live = []
            for it in items:
                if it.rid in self.cancelled:
                    replies.append((it.rid, CANCELLED, b""))
                else:
                    live.append(it)
        if live:
            pipeline = self.pipeline
            if pipeline.api.stream:
                self._reply(replies)
                replies = []
                if pipeline.batched:  # one generator for the batch, one chunk per request per step
                    self._send_out(P.END, run_sync(pipeline.stream_batch(live, self._emit)))
                else:
                    self._send_out(P.END, [run_sync(pipeline.stream(live[0], self._emit))])
            elif pipeline.batched:
                replies.extend(run_sync(pipeline.unary(live)))
            else:  # one request per predict call, each answered as soon as it is done
                self._reply(replies)
                replies = []
                for it in live:
                    self._reply(run_sync(pipeline.unary([it])))
                    self._flush()
        if replies:
            self._reply(replies)

    def _emit(self, rid: int, payload: bytes, status: int = 200, tag: bytes = b"") -> bool:
        """Send one stream chunk, then wait out a PAUSE (the client is behind); True if the request
        was cancelled meanwhile (the stream stops)."""
        self._send_out(P.CHUNK, [(rid, status, payload, tag)])
        self.hold_while_paused(rid)
        return rid in self.cancelled


class AsyncRunner:
    """The asyncio loop for ``async def predict``: up to ``max_concurrency`` requests at once.

    The socket is read the way the app reads its own (core/router.py): its file descriptor is
    registered with the loop and every message waiting is handled in one callback, without a future
    per message; each request runs in a task. Results finished in the same loop turn leave together
    in one message; stream chunks leave at once.
    """

    def __init__(self, api: LitAPI, sock: zmq.Socket, side: SideSocket | None = None) -> None:
        self.pipeline = Pipeline(api, self._emit)
        self.sock = sock
        # LitAPI.log sends through _write, like every reply (from a thread of the user's: ``side``)
        hooks.install_log_sink(api, log_sender(self._write, side))
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.batches: dict[int, list[int]] = {}  # rid -> rids of its batch, to cancel only whole batches
        self.cancelled: set[int] = set()
        self.paused: dict[int, asyncio.Future[None]] = {}  # PAUSE: the stream's next chunk waits for RESUME
        self.outbox: list[P.Reply] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._read_soon = False

    async def run(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        fd = self.sock.FD
        loop.add_reader(fd, self._on_readable)
        self._on_readable()  # ZeroMQ's descriptor is edge-triggered: read what is already waiting
        try:
            await self._stop
            while self.tasks:  # STOP: finish what runs (CANCELs are still read meanwhile)
                await asyncio.wait(set(self.tasks.values()))
            self._flush()
        finally:
            loop.remove_reader(fd)

    def _on_readable(self) -> None:
        self._read_soon = False
        sock = self.sock
        while wire.readable(sock):
            self._handle(wire.recv(sock, wire.NOBLOCK))

    def _handle(self, frames: list[bytes]) -> None:
        message = decode(frames)
        if message is None:
            return
        kind, items = message
        if kind == P.REQUEST:
            for batch in P.split_batches(items):  # one message may carry several batches
                task = asyncio.create_task(self._run(batch))
                rids = [it.rid for it in batch]
                task.add_done_callback(functools.partial(self._unstarted, rids=rids))
                for rid in rids:
                    self.tasks[rid] = task
                    self.batches[rid] = rids
        elif kind == P.CANCEL:
            for it in items:
                self._cancel(it.rid)
        elif kind == P.PAUSE:
            assert self._loop is not None
            for it in items:
                if it.rid in self.tasks and it.rid not in self.paused:
                    self.paused[it.rid] = self._loop.create_future()
        elif kind == P.RESUME:
            for it in items:
                resumed = self.paused.pop(it.rid, None)
                if resumed is not None and not resumed.done():
                    resumed.set_result(None)
        elif kind == P.STOP:
            assert self._stop is not None
            if not self._stop.done():
                self._stop.set_result(None)

    def _unstarted(self, task: asyncio.Task[None], *, rids: list[int]) -> None:
        """A task cancelled before its first step never ran ``_run``: answer and forget its requests here."""
        if not task.cancelled() or self.tasks.get(rids[0]) is not task:
            return
        for rid in rids:
            self.tasks.pop(rid, None)
            self.batches.pop(rid, None)
            self.cancelled.discard(rid)
        cancelled: list[P.Reply] = [(rid, CANCELLED, b"") for rid in rids]
        if self.pipeline.api.stream:
            self._send(P.END, cancelled)
        else:
            self._reply(cancelled)

    def _cancel(self, rid: int) -> None:
        task = self.tasks.get(rid)
        if task is None:
            return
        self.cancelled.add(rid)
        # A task reading its own CANCEL (in ``_emit``) stops its stream there, by itself: cancelling
        # it too would throw CancelledError into the cleanup that follows (the user's generators'
        # ``finally``, at their first await).
        if all(r in self.cancelled for r in self.batches[rid]) and task is not asyncio.current_task():
            task.cancel()

    def _send(self, kind: int, replies: list[P.Reply]) -> None:
        self._flush()  # results finished earlier leave first
        self._write(P.encode(kind, replies))

    def _reply(self, replies: list[P.Reply]) -> None:
        """Queue RESULT replies; they leave at the end of this loop turn, with any others."""
        if not self.outbox:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        self.outbox.extend(replies)

    def _flush(self) -> None:
        if self.outbox:
            frames = P.encode(P.RESULT, self.outbox)
            self.outbox = []
            self._write(frames)

    def _write(self, frames: list[bytes]) -> None:
        """Send, then make sure a readable edge the send consumed is not lost (also for LitAPI.log)."""
        wire.send(self.sock, frames, wire.NOBLOCK)  # never blocks: the socket's send queue is unbounded
        if self._loop is not None and not self._read_soon and wire.readable(self.sock):
            # Sending may have consumed the readable edge: read what is waiting on the next turn.
            self._read_soon = True
            assert self._loop is not None
            self._loop.call_soon(self._on_readable)

    async def _run(self, items: list[P.Item]) -> None:
        rids = [it.rid for it in items]
        pipeline = self.pipeline
        try:
            if pipeline.api.stream and pipeline.batched:
                self._send(P.END, await run_async(pipeline.stream_batch(items, self._emit)))
            elif pipeline.api.stream:
                self._send(P.END, [await run_async(pipeline.stream(items[0], self._emit))])
            else:
                self._reply(await run_async(pipeline.unary(items)))
        except asyncio.CancelledError:
            if pipeline.api.stream:
                self._send(P.END, [(rid, CANCELLED, b"") for rid in rids])
            else:
                self._reply([(rid, CANCELLED, b"") for rid in rids])
        finally:
            for rid in rids:
                self.tasks.pop(rid, None)
                self.batches.pop(rid, None)
                self.cancelled.discard(rid)
                self.paused.pop(rid, None)

    def _emit(self, rid: int, payload: bytes, status: int = 200, tag: bytes = b"") -> asyncio.Future[None] | bool:
        """Send one stream chunk; while a PAUSE holds, the stream awaits RESUME before its next chunk
        (a CANCEL cancels the task, and so the wait). True if the request was cancelled meanwhile:
        a CANCEL read here, for a generator that never yields to the loop, stops the stream this way."""
        self._send(P.CHUNK, [(rid, status, payload, tag)])
        if self._read_soon:  # a message waits: read it now, for a generator that never yields to the loop
            self._on_readable()
        if rid in self.cancelled:  # (read just now: see _cancel) the stream stops; no RESUME will come
            return True
        paused = self.paused.get(rid)
        if paused is not None:
            return paused  # awaited by run_async; its result (None) means "not cancelled"
        return False
