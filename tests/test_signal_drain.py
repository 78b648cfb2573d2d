"""``SignalDrain`` in front of a host server's signal handler, without a server: a fake app records
what the drain does, real signals are sent to this process (pytest runs tests on the main thread).

Invariants: the first SIGTERM drains and hands the signal to the host's handler only once nothing is
in flight (or the grace is over, and then what is left is answered 503); a second signal reaches the
host's handler at once; the host's handler is called once per signal we were given; ``uninstall``
gives the host its handler back. Both kinds of host handler: ``signal.signal`` and
``loop.add_signal_handler``. Also: ``start_child`` starts a process from a daemonic one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from dataclasses import dataclass, field

import pytest

from litserve.core.drain import SignalDrain, shutdown_budget
from litserve.core.spawn import start_child
from litserve.errors import ServiceUnavailable


@dataclass
class FakeSettings:
    shutdown_grace: float


@dataclass
class FakePool:
    """The pool as the drain uses it: ``wait_idle()`` waits until the drain's deadline (here ``grace``)."""

    grace: float = 30.0
    calls: dict = field(default_factory=dict)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: list = field(default_factory=list)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        timeout = self.grace if timeout is None else timeout
        if not self.calls:
            return True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def cancel(self, call, exc) -> None:
        self.cancelled.append((call, exc))
        self.calls.pop(call, None)


class FakeApp:
    def __init__(self, grace: float) -> None:
        self.settings = FakeSettings(grace)
        self.pool = FakePool(grace)
        self.drained = False

    def drain(self) -> None:
        self.drained = True

    # What LitApp offers the drain over all its APIs' pools (here the one fake pool).
    async def wait_idle(self, timeout: float | None = None) -> bool:
        return await self.pool.wait_idle(timeout)

    def fail_in_flight(self, reason: str) -> int:
        stuck = list(self.pool.calls)
        for call in stuck:
            self.pool.cancel(call, ServiceUnavailable(reason))
        return len(stuck)


async def until(condition, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)  # poll interval, bounded by the timeout

    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
def host_handler():
    """A host server's SIGTERM/SIGINT handler that records what reached it; restored afterwards."""
    got: list[int] = []
    previous = {s: signal.signal(s, lambda sig, frame: got.append(sig)) for s in (signal.SIGTERM, signal.SIGINT)}
    yield got
    for s, h in previous.items():
        signal.signal(s, h)


def test_first_signal_drains_then_hands_over_once_idle(host_handler):
    async def main() -> None:
        app = FakeApp(grace=30)
        app.pool.calls["r1"] = object()  # a request in flight
        drain = SignalDrain(app)
        assert drain.install()
        os.kill(os.getpid(), signal.SIGTERM)
        await until(lambda: app.drained)
        await asyncio.sleep(0.05)  # model: the request still runs; the host must not have been told yet
        assert host_handler == []
        app.pool.calls.clear()
        app.pool.idle.set()  # the request finished
        await until(lambda: host_handler == [signal.SIGTERM])
        assert app.pool.cancelled == []
        drain.uninstall()
        assert signal.getsignal(signal.SIGTERM) is not None and signal.getsignal(signal.SIGTERM) != drain._on_signal

    asyncio.run(main())


def test_second_signal_reaches_the_host_at_once_and_only_once(host_handler):
    async def main() -> None:
        app = FakeApp(grace=30)
        app.pool.calls["r1"] = object()
        drain = SignalDrain(app)
        drain.install()
        os.kill(os.getpid(), signal.SIGTERM)
        await until(lambda: app.drained)
        os.kill(os.getpid(), signal.SIGINT)  # impatient: stop now
        await until(lambda: host_handler == [signal.SIGINT])
        app.pool.calls.clear()
        app.pool.idle.set()
        await asyncio.sleep(0.05)  # model: give a wrong second hand-over the chance to happen
        assert host_handler == [signal.SIGINT]
        drain.uninstall()

    asyncio.run(main())


def test_past_the_grace_what_is_left_is_answered_503_then_the_host_stops(host_handler):
    async def main() -> None:
        app = FakeApp(grace=0.2)
        app.pool.calls["stuck"] = "stuck"
        drain = SignalDrain(app)
        drain.install()
        os.kill(os.getpid(), signal.SIGTERM)
        await until(lambda: host_handler == [signal.SIGTERM])
        [(call, exc)] = app.pool.cancelled
        assert call == "stuck" and isinstance(exc, ServiceUnavailable)
        drain.uninstall()

    asyncio.run(main())


def test_an_asyncio_servers_loop_handler_is_chained_and_given_back():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        got: list[str] = []
        loop.add_signal_handler(signal.SIGTERM, got.append, "host")
        try:
            app = FakeApp(grace=30)
            drain = SignalDrain(app)
            assert drain.install()
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: got == ["host"])  # nothing in flight: drained, then handed over at once
            assert app.drained
            drain.uninstall()
            os.kill(os.getpid(), signal.SIGTERM)  # the host's own handler again, no drain in front
            await until(lambda: got == ["host", "host"])
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(main())


def test_nothing_to_chain_leaves_the_process_alone():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # else asyncio.run installs a SIGINT handler
    try:

        async def main() -> bool:
            return SignalDrain(FakeApp(grace=1)).install()

        assert asyncio.run(main()) is False
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def test_shutdown_budget_covers_the_grace():
    assert shutdown_budget(30) >= 30 + 5  # the margin deploy/k8s relies on


def _report(queue) -> None:
    queue.put(os.getpid())


def _start_from_daemon(queue) -> None:
    ctx = multiprocessing.get_context("spawn")
    plain = ctx.Process(target=_report, args=(queue,))
    try:
        plain.start()
        queue.put("plain start worked")
    except AssertionError as exc:  # what hypercorn's workers hit
        queue.put(f"refused: {exc}")
    child = ctx.Process(target=_report, args=(queue,))
    start_child(child)
    child.join(30)
    queue.put(("exitcode", child.exitcode, multiprocessing.current_process().daemon))


def test_start_child_starts_a_worker_from_a_daemonic_process():
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    daemon = ctx.Process(target=_start_from_daemon, args=(queue,), daemon=True)
    daemon.start()
    try:
        refused = queue.get(timeout=60)
        assert refused.startswith("refused: daemonic processes are not allowed to have children")
        child_pid = queue.get(timeout=60)
        assert isinstance(child_pid, int) and child_pid != daemon.pid
        assert queue.get(timeout=60) == ("exitcode", 0, True)  # and the daemon flag is back
    finally:
        daemon.join(30)
        if daemon.is_alive():
            daemon.kill()
