"""Worker processes: spawn, the READY/FAILED handshake and its deadline, death watch, replacement
with backoff, kill of a hung worker, bounded stop.

Deaths are seen through each process's sentinel (a pipe the OS closes when the process exits),
registered with the event loop, so a dead worker is noticed at once and nothing polls. The socket and
the requests belong to the pool; this module only owns processes and tells the pool what happened:
``on_ready(handle)`` when a worker reported READY, ``on_exit(handle)`` when one is gone.

Restarts: a worker whose setup fails is retried with exponential backoff (BACKOFF_BASE..BACKOFF_MAX).
A ready worker that dies is replaced at once the first time; if its replacements keep dying within
STABLE_AFTER seconds of becoming ready (a request that crashes workers, a broken GPU), each next
replacement waits longer (CRASH_BACKOFF_BASE doubling, at most CRASH_BACKOFF_MAX), so a crash loop
cannot burn the machine, while the other workers keep serving the queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from ..api import LitAPI
from ..errors import WorkerStartupError
from . import protocol as P
from .spawn import start_child
from .states import ExitReason, WorkerState
from .worker import WorkerSpec, main

logger = logging.getLogger("litserve")

STARTING, READY, STOPPING, DEAD = WorkerState.STARTING, WorkerState.READY, WorkerState.STOPPING, WorkerState.DEAD
BACKOFF_BASE = 0.5  # seconds before the first restart of a worker whose setup failed
BACKOFF_MAX = 30.0  # no crash loop restarts faster than this once it has failed a few times
CRASH_BACKOFF_BASE = 0.25  # seconds before the 2nd quick replacement of a ready worker that died
CRASH_BACKOFF_MAX = 5.0  # short: the queue waits for capacity, but a crash loop must not spin
STABLE_AFTER = 30.0  # a worker that served this long resets its slot's crash backoff
REAP_SECONDS = 1.0  # after SIGKILL, how long to wait for the OS to report the exit


@dataclass(eq=False)
class WorkerHandle:
    slot: int
    device: str
    identity: bytes
    process: BaseProcess
    state: WorkerState = STARTING
    capacity: int = 0
    kill_reason: ExitReason | None = None  # set when the app killed it (hung)
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    error: str | None = None
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)  # set on READY or on exit
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return f"worker-{self.slot}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def info(self) -> dict[str, object]:
        return {
            "name": self.name,
            "device": self.device,
            "pid": self.pid,
            "state": self.state,
            "capacity": self.capacity,
        }


class Supervisor:
    """One process per device slot, kept alive.

    Args:
        on_ready: called with a worker's handle when it reported READY.
        on_exit: called with the handle of every worker that exits, before any replacement starts.
        on_restart: called with the reason (crash, hung, exit) when a ready worker's replacement is
            spawned (for metrics).
        heartbeat_interval: seconds between a worker's heartbeats (None: none).
    """

    def __init__(
        self,
        api: LitAPI,
        devices: list[str],
        address: str,
        *,
        startup_timeout: float,
        on_exit: Callable[[WorkerHandle], None],
        on_ready: Callable[[WorkerHandle], None] = lambda handle: None,
        on_restart: Callable[[ExitReason], None] = lambda reason: None,
        log_level: int = logging.INFO,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.api = api
        self.devices = devices
        self.address = address
        self.startup_timeout = startup_timeout
        self._on_exit = on_exit
        self._on_ready = on_ready
        self._on_restart = on_restart
        self._log_level = log_level
        self._heartbeat_interval = heartbeat_interval
        self._crashes: dict[int, int] = {}  # consecutive quick deaths of ready workers per slot
        self._ctx = multiprocessing.get_context("spawn")
        self.workers: dict[int, WorkerHandle] = {}
        self._by_identity: dict[bytes, WorkerHandle] = {}
        self._failures: dict[int, int] = {}  # consecutive failed starts per slot
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._stopping = False
        self._started = False  # start() succeeded; before that a failure fails start() instead of retrying

    # -- start ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn every worker and wait until all are READY; raise WorkerStartupError otherwise."""
        handles = [self._spawn(slot, device) for slot, device in enumerate(self.devices)]
        waits = [asyncio.ensure_future(h.ready_event.wait()) for h in handles]
        try:
            done, pending = await asyncio.wait(waits, timeout=self.startup_timeout)
        finally:
            for w in waits:
                w.cancel()
        failed = [h for h in handles if h.state != READY]
        if failed:
            h = failed[0]
            if h.error:
                reason = h.error
            elif h.state == DEAD and (h.process.exitcode or 0) < 0:
                reason = f"it was killed by signal {-(h.process.exitcode or 0)} before reporting READY"
            elif h.state == DEAD:
                reason = (
                    f"it exited with code {h.process.exitcode} before reporting READY (a script that starts "
                    "the server must do so under `if __name__ == '__main__':`, since workers re-import it)"
                )
            else:
                reason = f"it did not report READY within startup_timeout={self.startup_timeout}s"
            raise WorkerStartupError(f"{h.name} on {h.device} could not start: {reason}")
        self._started = True

    def _spawn(self, slot: int, device: str) -> WorkerHandle:
        identity = f"w{slot}-".encode() + secrets.token_hex(8).encode()
        spec = WorkerSpec(
            self.api, self.address, identity, device, f"worker-{slot}", self._log_level, self._heartbeat_interval
        )
        process = self._ctx.Process(target=main, args=(spec,), name=f"litserve-worker-{slot}", daemon=False)
        start_child(process)  # not process.start(): that refuses in a daemonic process (hypercorn's workers)
        handle = WorkerHandle(slot, device, identity, process)
        self.workers[slot] = handle
        self._by_identity[identity] = handle
        self._by_identity[identity + P.HEARTBEAT_SUFFIX] = handle
        self._by_identity[identity + P.REPLY_SUFFIX] = handle
        loop = asyncio.get_running_loop()
        loop.add_reader(process.sentinel, self._exited, handle)
        self._timers[slot] = loop.call_later(self.startup_timeout, self._ready_overdue, handle)
        return handle

    # -- the handshake (messages the pool hands over) ----------------------------------------------------
    def by_identity(self, identity: bytes) -> WorkerHandle | None:
        handle = self._by_identity.get(identity)
        return handle if handle is not None and handle.state != DEAD else None

    def handshake(self, handle: WorkerHandle, kind: int, items: list[P.Item]) -> None:
        """A READY (capacity and facts) or FAILED (the setup error) message from ``handle``."""
        if not items:
            return
        if kind == P.READY:
            try:
                logger.debug("%s reports %s", handle.name, json.loads(items[0].payload))
            except ValueError:
                pass
            self.mark_ready(handle, items[0].status)
        elif kind == P.FAILED:
            try:
                error = json.loads(items[0].payload).get("error", "setup failed")
            except (ValueError, AttributeError):
                error = "setup failed"
            self.mark_failed(handle, str(error))

    def mark_ready(self, handle: WorkerHandle, capacity: int) -> None:
        if handle.state != STARTING:
            return
        handle.state = READY
        handle.capacity = capacity
        handle.ready_at = time.monotonic()
        self._failures.pop(handle.slot, None)
        timer = self._timers.pop(handle.slot, None)
        if timer:
            timer.cancel()
        handle.ready_event.set()
        # At start the app's banner lists every worker once; a replacement is worth its own line.
        level = logging.INFO if self._started else logging.DEBUG
        logger.log(level, "%s ready on %s (pid %s)", handle.name, handle.device, handle.pid)
        self._on_ready(handle)

    def mark_failed(self, handle: WorkerHandle, error: str) -> None:
        handle.error = error
        logger.error("%s setup failed on %s: %s", handle.name, handle.device, error)

    # -- deaths ---------------------------------------------------------------------------------------
    def kill(self, handle: WorkerHandle, reason: ExitReason, why: str) -> None:
        """Kill a worker the app gave up on (hung); it is replaced like a crashed one."""
        if handle.state != READY or handle.kill_reason is not None:
            return
        handle.kill_reason = reason
        logger.error("%s on %s (pid %s) is %s: %s; killing it", handle.name, handle.device, handle.pid, reason, why)
        handle.process.kill()

    def _ready_overdue(self, handle: WorkerHandle) -> None:
        if handle.state == STARTING:
            handle.error = f"setup did not finish within startup_timeout={self.startup_timeout}s"
            logger.error("%s on %s: %s; killing it", handle.name, handle.device, handle.error)
            handle.process.kill()

    def _exited(self, handle: WorkerHandle) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(handle.process.sentinel)
        handle.process.join(1.0)  # the sentinel closes just before the process can be reaped
        was = handle.state
        handle.state = DEAD
        self._by_identity.pop(handle.identity, None)
        self._by_identity.pop(handle.identity + P.HEARTBEAT_SUFFIX, None)
        self._by_identity.pop(handle.identity + P.REPLY_SUFFIX, None)
        timer = self._timers.pop(handle.slot, None)
        if timer:
            timer.cancel()
        handle.ready_event.set()  # wake start() so it can report the failure
        handle.exited.set()
        self._on_exit(handle)
        if self._stopping or was == STOPPING or not self._started:
            return
        code = handle.process.exitcode
        if was == READY:
            reason = handle.kill_reason or (ExitReason.EXIT if code == 0 else ExitReason.CRASH)
            lived = time.monotonic() - (handle.ready_at or 0.0)
            n = 0 if lived > STABLE_AFTER else self._crashes.get(handle.slot, 0)
            self._crashes[handle.slot] = n + 1
            delay = 0.0 if n == 0 else min(CRASH_BACKOFF_MAX, CRASH_BACKOFF_BASE * 2 ** (n - 1))
            if handle.kill_reason is None:
                logger.error(
                    "%s on %s (pid %s) exited with code %s; replacing it%s",
                    handle.name,
                    handle.device,
                    handle.pid,
                    code,
                    f" in {delay:.2f}s ({n + 1} quick exits in a row)" if delay else "",
                )
        else:
            reason = ExitReason.SETUP
            n = self._failures.get(handle.slot, 0)
            self._failures[handle.slot] = n + 1
            delay = min(BACKOFF_MAX, BACKOFF_BASE * 2**n)
            logger.error(
                "%s on %s failed to start (exit code %s); retrying in %.1fs", handle.name, handle.device, code, delay
            )
        self._timers[handle.slot] = loop.call_later(delay, self._replace, handle.slot, handle.device, reason)

    def _replace(self, slot: int, device: str, reason: ExitReason) -> None:
        self._timers.pop(slot, None)
        if self._stopping:
            return
        self._on_restart(reason)
        self._spawn(slot, device)

    @property
    def crash_looping(self) -> bool:
        """True when no worker is ready and some slot keeps failing to start."""
        return bool(self._failures) and not any(h.state == READY for h in self.workers.values())

    @property
    def ready_count(self) -> int:
        return sum(1 for h in self.workers.values() if h.state == READY)

    # -- stop -----------------------------------------------------------------------------------------
    async def stop(self, deadline: float, send_stop: Callable[[WorkerHandle], None]) -> None:
        """STOP every ready worker and wait for them until ``deadline`` (``time.monotonic()``); kill
        what is left, and wait at most REAP_SECONDS more for the OS to report those exits.

        Workers ignore SIGTERM (a group-wide SIGTERM from a process manager must not cut their
        requests short; the app drains them), so the escalation after STOP is SIGKILL.
        """
        self._stopping = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        alive = [h for h in self.workers.values() if h.state != DEAD]
        for h in alive:
            if h.state == READY:
                send_stop(h)
            else:
                h.process.kill()  # still in setup: it holds no request
            h.state = STOPPING
        await self._wait_exit(alive, deadline - time.monotonic())
        for h in alive:
            # The sentinel, not is_alive(): the sentinel closes as the process exits, a moment before
            # it can be reaped, so is_alive() may still say True for a worker that has already stopped.
            if not h.exited.is_set():
                logger.warning("%s (pid %s) did not stop by the shutdown deadline; killing it", h.name, h.pid)
                h.process.kill()
        await self._wait_exit(alive, REAP_SECONDS)

    async def _wait_exit(self, handles: list[WorkerHandle], timeout: float) -> None:
        waits = [asyncio.ensure_future(h.exited.wait()) for h in handles if not h.exited.is_set()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=max(0.0, timeout))
            for w in pending:
                w.cancel()

    def kill_all_now(self) -> None:
        """Last resort at interpreter exit, when there is no event loop to stop gracefully."""
        self._stopping = True
        for h in self.workers.values():
            if h.process.pid is not None and h.process.is_alive():
                h.process.kill()
        for h in self.workers.values():
            if h.process.pid is not None:
                h.process.join(2.0)
