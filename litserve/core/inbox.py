"""A blocking worker loop's side of the socket: the app's messages in, replies out, what is live.

Both blocking loops (``SyncRunner`` for ``def predict``, ``StepRunner`` for continuous batching) read
the same messages and keep the same account: every request received (``known``) gets exactly one
terminal reply, a CANCEL only marks requests still known, STOP ends the loop once its work is done.
What differs is what they do with a REQUEST (``accept``) and a REVOKE (``revoke``).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

import zmq

from . import protocol as P
from . import wire

logger = logging.getLogger("litserve.worker")

_ENDS = P.TERMINAL | {P.REVOKED}  # replies after which the app no longer counts a request as ours
EARLY_CANCELS = 256  # CANCELs of requests not known yet, kept per worker (see SyncRunner)


class Inbox(ABC):
    """Reads and dispatches the app's messages for one blocking loop; sends its replies."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.known: set[int] = set()  # received, no terminal reply sent yet
        self.cancelled: set[int] = set()
        self.paused: set[int] = set()  # streams whose client is behind (PAUSE): no chunk until RESUME
        # CANCELs of requests not known (yet), the last EARLY_CANCELS, oldest first: a dict, so that the
        # main thread's look-up per request it reads on ``out`` costs the same however many are kept.
        self.early_cancels: dict[int, None] = {}
        self.stopping = False
        self.closed = False  # the reading side ended: no RESUME can come any more
        # Guards ``known``/``cancelled``/``paused`` (and a loop's own queue) where two threads touch
        # them: a CANCEL marked between a reply's two discards would otherwise stay marked for good.
        self.lock = threading.Lock()
        self.flow = threading.Condition(self.lock)  # notified when a pause may be over (RESUME, CANCEL, end)

    @abstractmethod
    def accept(self, items: list[P.Item]) -> None:
        """Take the requests of a REQUEST message (each loop queues them its own way)."""

    def revoke(self, rids: set[int]) -> None:  # noqa: B027 - a loop without prefetch has nothing to give back
        """Give back what the app takes back, if it has not started it."""

    def wait(self) -> None:
        """Block until the app sends something, then handle it."""
        self._handle(wire.recv(self.sock))

    def drain(self) -> None:
        """Handle every message already waiting, without blocking."""
        sock = self.sock
        while wire.readable(sock):
            self._handle(wire.recv(sock, wire.NOBLOCK))

    def send(self, kind: int, replies: list[P.Reply]) -> None:
        if kind in _ENDS:
            self._forget(replies)
        wire.send(self.sock, P.encode(kind, replies))

    def _forget(self, replies: list[P.Reply]) -> None:
        """The requests of these terminal replies are no longer ours."""
        known, cancelled = self.known, self.cancelled
        paused = self.paused
        with self.lock:
            for reply in replies:
                known.discard(reply[0])
                cancelled.discard(reply[0])
                paused.discard(reply[0])

    def _handle(self, frames: list[bytes]) -> None:
        message = decode(frames)
        if message is None:
            return
        kind, items = message
        if kind == P.REQUEST:
            self.known.update(it.rid for it in items)
            self.accept(items)
        elif kind == P.CANCEL:
            with self.lock:
                for it in items:
                    if it.rid in self.known:
                        self.cancelled.add(it.rid)
                    else:  # answered already, or sent to another socket of ours and not read yet
                        early = self.early_cancels
                        early[it.rid] = None
                        if len(early) > EARLY_CANCELS:
                            del early[next(iter(early))]
                self.flow.notify_all()
        elif kind == P.REVOKE:
            self.revoke({it.rid for it in items})
        elif kind == P.PAUSE:
            with self.lock:
                self.paused.update(it.rid for it in items if it.rid in self.known)
        elif kind == P.RESUME:
            with self.lock:
                self.paused.difference_update(it.rid for it in items)
                self.flow.notify_all()
        elif kind == P.STOP:
            self.stopping = True

    def hold_while_paused(self, rid: int) -> None:
        """Block the producing thread while ``rid``'s client is behind (until RESUME or CANCEL).

        Called after each chunk by a loop that runs one stream per generator; another thread reads
        the socket meanwhile. A loop without a reading thread must not call it."""
        if rid not in self.paused:
            return
        with self.flow:
            while rid in self.paused and rid not in self.cancelled and not self.closed:
                self.flow.wait()


def decode(frames: list[bytes]) -> tuple[int, list[P.Item]] | None:
    """A message from the app as (kind, items), or None (logged) when it is malformed: every worker
    loop drops such a message and goes on."""
    try:
        return P.decode(frames)
    except P.ProtocolError as exc:
        logger.warning("dropped a malformed frame from the app: %s", exc)
        return None
