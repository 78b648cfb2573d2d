"""Worker processes: spawn, READY deadline, death watch, replacement with backoff, bounded stop.

Deaths are seen through each process's sentinel (a pipe the OS closes when the process exits),
registered with the event loop, so a dead worker is noticed at once and nothing polls. The socket and
the requests belong to the pool; this module only owns processes and tells the pool what happened.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from ..api import LitAPI
from ..errors import WorkerStartupError
from .spawn import start_child
from .worker import WorkerSpec, main

logger = logging.getLogger("litserve")

STARTING, READY, STOPPING, DEAD = "starting", "ready", "stopping", "dead"
BACKOFF_BASE = 0.5  # seconds before the first restart of a worker whose setup failed
BACKOFF_MAX = 30.0  # no crash loop restarts faster than this once it has failed a few times


@dataclass(eq=False)
class WorkerHandle:
    slot: int
    device: str
    identity: bytes
    process: BaseProcess
    state: str = STARTING
    capacity: int = 0
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
        on_exit: called with the handle of every worker that exits, before any replacement starts.
        on_restart: called when a replacement is spawned (for metrics).
    """

    def __init__(
        self,
        api: LitAPI,
        devices: list[str],
        address: str,
        *,
        startup_timeout: float,
        on_exit: Callable[[WorkerHandle], None],
        on_restart: Callable[[], None] = lambda: None,
        log_level: int = logging.INFO,
    ) -> None:
        self.api = api
        self.devices = devices
        self.address = address
        self.startup_timeout = startup_timeout
        self._on_exit = on_exit
        self._on_restart = on_restart
        self._log_level = log_level
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
        spec = WorkerSpec(self.api, self.address, identity, device, f"worker-{slot}", self._log_level)
        process = self._ctx.Process(target=main, args=(spec,), name=f"litserve-worker-{slot}", daemon=False)
        start_child(process)  # not process.start(): that refuses in a daemonic process (hypercorn's workers)
        handle = WorkerHandle(slot, device, identity, process)
        self.workers[slot] = handle
        self._by_identity[identity] = handle
        loop = asyncio.get_running_loop()
        loop.add_reader(process.sentinel, self._exited, handle)
        self._timers[slot] = loop.call_later(self.startup_timeout, self._ready_overdue, handle)
        return handle

    # -- events from the pool -------------------------------------------------------------------------
    def by_identity(self, identity: bytes) -> WorkerHandle | None:
        handle = self._by_identity.get(identity)
        return handle if handle is not None and handle.state != DEAD else None

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
        logger.info("%s ready on %s (pid %s)", handle.name, handle.device, handle.pid)

    def mark_failed(self, handle: WorkerHandle, error: str) -> None:
        handle.error = error
        logger.error("%s setup failed on %s: %s", handle.name, handle.device, error)

    # -- deaths ---------------------------------------------------------------------------------------
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
            delay = 0.0
            logger.error(
                "%s on %s (pid %s) exited with code %s; replacing it", handle.name, handle.device, handle.pid, code
            )
        else:
            n = self._failures.get(handle.slot, 0)
            self._failures[handle.slot] = n + 1
            delay = min(BACKOFF_MAX, BACKOFF_BASE * 2**n)
            logger.error(
                "%s on %s failed to start (exit code %s); retrying in %.1fs", handle.name, handle.device, code, delay
            )
        self._timers[handle.slot] = loop.call_later(delay, self._replace, handle.slot, handle.device)

    def _replace(self, slot: int, device: str) -> None:
        self._timers.pop(slot, None)
        if self._stopping:
            return
        self._on_restart()
        self._spawn(slot, device)

    @property
    def crash_looping(self) -> bool:
        """True when no worker is ready and some slot keeps failing to start."""
        return bool(self._failures) and not any(h.state == READY for h in self.workers.values())

    @property
    def ready_count(self) -> int:
        return sum(1 for h in self.workers.values() if h.state == READY)

    # -- stop -----------------------------------------------------------------------------------------
    async def stop(self, grace: float, send_stop: Callable[[WorkerHandle], None]) -> None:
        """STOP every ready worker and wait up to ``grace`` seconds; kill what is left.

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
        await self._wait_exit(alive, grace)
        for h in alive:
            # The sentinel, not is_alive(): the sentinel closes as the process exits, a moment before
            # it can be reaped, so is_alive() may still say True for a worker that has already stopped.
            if not h.exited.is_set():
                logger.warning("%s (pid %s) did not stop within %ss; killing it", h.name, h.pid, grace)
                h.process.kill()
        await self._wait_exit(alive, 5.0)

    async def _wait_exit(self, handles: list[WorkerHandle], timeout: float) -> None:
        waits = [asyncio.ensure_future(h.exited.wait()) for h in handles if not h.exited.is_set()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
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
