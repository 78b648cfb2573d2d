"""Sending and receiving multipart messages on a ZeroMQ socket, on the request path.

pyzmq's ``send_multipart``/``recv_multipart`` wrap each frame in Python-level checks and combine
flags through ``enum.IntFlag`` (``SNDMORE | flags``), and ``getsockopt(EVENTS)`` converts its result
into an enum: about ten enum operations per message, twice the cost of these functions per send
and receive pair (``benchmarks/zmq_calls.py``). At one connection every request pays that twice in
the app and twice in its worker. These functions call the socket's compiled methods directly with
plain-int flags; the bytes on the wire are the same. (The compiled ``get`` still builds one enum per
call, so ``readable`` is asked only where edge-triggered reading needs it, and ``recv`` reads
``Frame.more`` instead.)
"""

from __future__ import annotations

from collections.abc import Sequence

import zmq
from zmq.backend import Socket as _Compiled

_send = _Compiled.send
_recv = _Compiled.recv
_get = _Compiled.get

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def send(sock: zmq.Socket, frames: Sequence[bytes], flags: int = 0) -> None:
    """Send ``frames`` as one message (raises ``zmq.ZMQError`` like ``send_multipart``)."""
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i in range(last):
        _send(sock, frames[i], more)
    _send(sock, frames[last], flags)


def recv(sock: zmq.Socket, flags: int = 0) -> list[bytes]:
    """Receive one whole message as a list of ``bytes`` frames.

    Frames are read as ``zmq.Frame`` for their ``more`` flag: asking the socket (``RCVMORE``) instead
    builds an enum per frame inside pyzmq. ``.bytes`` copies once, as a copying receive would.
    """
    frame = _recv(sock, flags, copy=False)
    parts = [frame.bytes]
    while frame.more:
        frame = _recv(sock, flags, copy=False)
        parts.append(frame.bytes)
    return parts


def readable(sock: zmq.Socket) -> bool:
    """A whole message is waiting (``EVENTS & POLLIN``); also re-arms ZeroMQ's edge-triggered fd."""
    return bool(_get(sock, _EVENTS) & _POLLIN)  # type: ignore[operator]  # an int for EVENTS
