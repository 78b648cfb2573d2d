"""The drain on SIGTERM/SIGINT, the same whichever server runs the app.

A load balancer must see ``/ready`` turn 503 *before* the listener closes, or a rolling update drops
the requests it still routes. uvicorn, gunicorn's uvicorn worker, ``uvicorn --workers`` and
``LitServer.run`` all stop by a signal handler that closes the listener at once. So the app's
lifespan (and ``LitApp.running()``) puts its own handler in front of whatever handler the host server
installed:

1. the first SIGTERM/SIGINT drains: ``/ready`` and the model route answer 503 (with Retry-After)
   at once, requests in flight get up to ``shutdown_grace`` seconds to finish, and what is still
   running after that is answered 503 (left waiting, the host server would hold those connections for
   its own graceful timeout and then drop them);
2. then the host server's own handler runs with that signal, and it stops as it always does;
3. a second signal skips the wait: the host's handler runs at once (a second SIGTERM to a process
   whose SIGTERM was at its default disposition does not: that is a process manager repeating itself).

Both kinds of host handler are chained: one set with ``signal.signal`` (uvicorn, gunicorn, twisted)
and one set with ``loop.add_signal_handler`` (asyncio servers). A SIGTERM left at its default
disposition is taken too (hypercorn's master terminates its busy workers as soon as an idle one has
exited, which used to cut their requests short): the process drains, lets its host finish its own
shutdown, and dies of the signal only once the app has stopped (or ``SHUTDOWN_MARGIN`` seconds after
the drain, if the host never stops it). The drain is installed only on the main thread (signal
handlers can be set nowhere else).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import LitApp

logger = logging.getLogger("litserve")

SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Seconds a stop takes beyond ``shutdown_grace``: the host server closing its connections, the
# pool reaping workers killed at the stop deadline (``supervisor.REAP_SECONDS``), the process exiting.
SHUTDOWN_MARGIN = 10.0


def shutdown_budget(shutdown_grace: float) -> float:
    """Seconds from SIGTERM to the process's exit, at most.

    Drain and stop share one deadline (``Pool.begin_drain``): requests in flight get until
    ``shutdown_grace`` after the signal, what is left is answered 503, workers that have not exited
    on STOP by then are killed. Kubernetes' terminationGracePeriodSeconds must be at least preStop
    + this (deploy/k8s and tests/test_k8s.py hold to it).
    """
    return shutdown_grace + SHUTDOWN_MARGIN


class SignalDrain:
    """Drain ``app`` on the first SIGTERM/SIGINT, then hand the signal to the host server's handler."""

    def __init__(self, app: LitApp) -> None:
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}  # sig -> the handler we stand in front of
        self._default: set[int] = set()  # signals we took over from their default disposition
        self._doomed: int | None = None  # a default-disposition signal to die of once the app has stopped
        self._death: asyncio.TimerHandle | None = None
        self._loop_handles: dict[int, asyncio.Handle] = {}  # sig -> an asyncio handler we stand in front of
        self._draining = False
        self._handed_over = False
        self._task: asyncio.Task[None] | None = None

    @property
    def installed(self) -> bool:
        return bool(self._previous or self._loop_handles or self._default)

    def install(self) -> bool:
        """Stand in front of the host's SIGTERM/SIGINT handlers; False when there is none to chain."""
        if threading.current_thread() is not threading.main_thread():
            return False  # signal handlers can only be set from the main thread
        self._loop = loop = asyncio.get_running_loop()
        asyncio_handlers: dict[int, asyncio.Handle] = getattr(loop, "_signal_handlers", None) or {}
        for sig in SIGNALS:
            handle = asyncio_handlers.get(sig)
            if handle is not None:
                # An asyncio server's handler: replace it with ours on the loop, keep it to chain to.
                self._loop_handles[sig] = handle
                loop.add_signal_handler(sig, self._on_signal, sig, None)
                continue
            current = signal.getsignal(sig)
            if callable(current) and current is not signal.default_int_handler:
                self._previous[sig] = current
            elif sig == signal.SIGTERM and current == signal.SIG_DFL:
                self._default.add(sig)
            else:
                continue
            signal.signal(sig, self._on_signal)
        if self.installed:
            names = [signal.Signals(s).name for s in (*self._previous, *self._loop_handles, *self._default)]
            logger.debug("drain on %s installed", names)
        return self.installed

    def uninstall(self) -> None:
        """Give the host its handlers back (where ours is still the one installed).

        Called once the app has stopped: a default-disposition signal we held back ends the process now.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()
        for sig in self._default:
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, signal.SIG_DFL)
        self._default.clear()
        if self._death is not None:
            self._death.cancel()
        if self._doomed is not None:
            _die_of(self._doomed)
        loop = self._loop
        for sig, handle in self._loop_handles.items():
            current = getattr(loop, "_signal_handlers", {}).get(sig)
            if loop is not None and current is not None and current._callback == self._on_signal:  # type: ignore[attr-defined]
                loop.add_signal_handler(sig, handle._callback, *handle._args)  # type: ignore[attr-defined]
        self._loop_handles.clear()

    # -- the signal -----------------------------------------------------------------------------------
    def _on_signal(self, sig: int, frame: Any) -> None:
        if self._draining:
            if sig in self._default:
                # Not an impatient user: a process manager terminating again (multiprocessing's exit
                # handler terminates daemonic children a second time). The drain is bounded anyway.
                return
            self._hand_over(sig, frame)  # a second signal: stop now
            return
        self._draining = True
        if sig in self._default:
            self._doomed = sig  # whatever happens next, the process ends of it once the app has stopped
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._begin, sig, frame)

    def _begin(self, sig: int, frame: Any) -> None:
        if self._handed_over:
            return
        grace = self.app.settings.shutdown_grace
        logger.info("draining: refusing new requests, waiting up to %ss for those in flight", grace)
        self.app.drain()
        self._task = asyncio.get_running_loop().create_task(self._drain_then_hand_over(sig, frame))

    async def _drain_then_hand_over(self, sig: int, frame: Any) -> None:
        app = self.app
        if not await app.wait_idle():  # every API's pool, by the drain's deadline (shutdown_grace from app.drain())
            failed = app.fail_in_flight("the server is shutting down")
            logger.warning("%d request(s) still running after shutdown_grace; answered them 503", failed)
        if self._handed_over:
            return
        if sig in self._default:
            # No handler to hand over to: the host stops the app its own way (closing the listener,
            # finishing responses, the lifespan's stop); die of the signal after that, or after a bound.
            self._death = asyncio.get_running_loop().call_later(SHUTDOWN_MARGIN, self._hand_over, sig, frame)
            return
        self._hand_over(sig, frame)

    def _hand_over(self, sig: int, frame: Any) -> None:
        """Run the host's handler for ``sig`` (or, if we only stand in front of the other signal's, that one)."""
        self._handed_over = True
        if sig in self._default:
            _die_of(sig)
            return
        previous: Callable[..., Any] | None = self._previous.get(sig)
        handle = self._loop_handles.get(sig)
        if previous is None and handle is None:  # only the other signal's handler is ours to call
            previous = next(iter(self._previous.values()), None)
            handle = next(iter(self._loop_handles.values()), None)
        if previous is not None:
            previous(sig, frame)
        elif handle is not None:
            handle._run()


def _die_of(sig: int) -> None:
    """What the default disposition of ``sig`` does: end the process by that signal."""
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


class StartInterrupt:
    """While the workers start, SIGTERM/SIGINT cancel the start instead of waiting for it.

    Each worker runs ``setup`` before the app serves: minutes for a big model. The host server's
    handler only notes the signal, and acts once startup is over, so a Ctrl-C while a model loads
    used to go unanswered until every ``setup`` had finished (up to ``startup_timeout``). Here the
    first signal calls ``stop`` on the event loop at once (the app stops its pools, which kills the
    workers still in ``setup`` and so fails the start), then reaches the host's handler as usual,
    which stops the server as soon as the lifespan's startup returns. Only handlers set with
    ``signal.signal`` are chained (uvicorn's, gunicorn's uvicorn worker's), on the main thread;
    elsewhere nothing changes.
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        self.stop = stop
        self.interrupted = False
        self._loop = asyncio.get_running_loop()
        self._previous: dict[int, Callable[..., Any]] = {}

    def __enter__(self) -> StartInterrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                current = signal.getsignal(sig)
                if callable(current) and current is not signal.default_int_handler:
                    self._previous[sig] = current
                    signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()

    def _on_signal(self, sig: int, frame: Any) -> None:
        if not self.interrupted:
            self.interrupted = True
            self._loop.call_soon_threadsafe(self.stop)
        self._previous[sig](sig, frame)
