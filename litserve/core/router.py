"""The app's ZeroMQ ROUTER socket on the event loop: bind, read everything waiting, send, close.

The socket's file descriptor is registered with the loop; when it turns readable every message
waiting is read at once (ZeroMQ signals edge-triggered, so we drain until EVENTS says empty, and
check again after sending, which may consume the edge). That is what ``zmq.asyncio`` does
internally, minus a future per message; on the request path that difference is measurable.

The ipc socket lives in a private (0700) directory named ``litserve-*`` in the temp dir, with an
``owner.pid`` file naming this process. A server killed with ``kill -9`` cannot remove it; its
workers remove it when they see their parent die, and the next server to start removes any such
directory whose owner is gone (``remove_stale_socket_dirs``): never one whose owner still runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Callable

import zmq

from . import wire
from .protocol import SOCKET_DIR_PREFIX

logger = logging.getLogger("litserve")

OWNER_FILE = "owner.pid"


class Router:
    """One bound ROUTER socket feeding ``on_message(identity, frames)``; ``on_drained()`` runs after
    each batch of messages read together (the pool schedules once per batch, not per message)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes, list[bytes]], None],
        on_drained: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._on_message = on_message
        self._on_drained = on_drained
        self._ctx: zmq.Context | None = zmq.Context()
        self._dir: str | None = None
        self._drain_soon = False
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a gone worker raises instead of dropping
        sock.setsockopt(zmq.SNDHWM, 0)  # the scheduler bounds what is in flight; never block here
        sock.setsockopt(zmq.RCVHWM, 0)
        if zmq.has("ipc"):
            remove_stale_socket_dirs()
            self._dir = tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX)  # 0700: only this user can connect
            with open(os.path.join(self._dir, OWNER_FILE), "w") as f:
                f.write(f"{os.getpid()} {_start_time(os.getpid())}\n")
            self.address = f"ipc://{self._dir}/pool.sock"
            sock.bind(self.address)
        else:
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            self.address = f"tcp://127.0.0.1:{port}"
        self._sock: zmq.Socket | None = sock
        loop.add_reader(sock.FD, self._on_readable)

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            wire.send(sock, [identity, *frames], wire.NOBLOCK)
        except zmq.ZMQError as exc:
            # The worker is gone (its death will be seen through its sentinel) or the socket closed.
            logger.debug("send to %r failed: %s", identity, exc)
        if not self._drain_soon and wire.readable(sock):
            # Sending may have consumed the readable edge: read what is waiting on the next turn.
            self._drain_soon = True
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        self._drain_soon = False
        sock = self._sock
        if sock is None:
            return
        got = False
        try:
            while wire.readable(sock):
                frames = wire.recv(sock, wire.NOBLOCK)
                got = True
                try:
                    self._on_message(frames[0], frames[1:])
                except Exception:  # one bad message must never stop the receive loop
                    logger.exception("dropped a message that could not be handled")
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EAGAIN:
                logger.warning("receive failed: %s", exc)
        if got:
            self._on_drained()

    def close(self) -> None:
        """Close the socket and remove its directory; safe to call twice, and at interpreter exit."""
        if self._sock is not None:
            if not self._loop.is_closed():
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


def remove_stale_socket_dirs(tmp: str | None = None) -> list[str]:
    """Remove ``litserve-*`` socket directories of this user whose owning process is gone.

    A directory counts as stale only when its ``owner.pid`` names a process that no longer exists (or
    a different process that reused the pid, told apart by its start time). A directory without that
    file, of another user, or whose owner runs is left alone. Returns what was removed.
    """
    tmp = tmp or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        if not name.startswith(SOCKET_DIR_PREFIX):
            continue
        path = os.path.join(tmp, name)
        try:
            if os.lstat(path).st_uid != uid:
                continue
            with open(os.path.join(path, OWNER_FILE)) as f:
                pid_text, _, started = f.read().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if _alive(pid, started):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        logger.info("removed the socket directory %s left by a server (pid %s) that is gone", path, pid)
    return removed


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists (another user's process reused the pid): leave the directory alone
    return not started or _start_time(pid) == started


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart; "" elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        return ""
