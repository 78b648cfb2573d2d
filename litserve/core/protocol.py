"""The wire format between the app (ROUTER) and its workers (DEALER).

Only bytes cross the socket, in a fixed layout, so that nothing is ever unpickled off it and a
malformed or foreign frame can be rejected by looking at a few bytes.

A message is a list of ZeroMQ frames::

    [header, item_head, item_payload, item_head, item_payload, ...]

- ``header`` is two bytes: the protocol version and the frame kind (one ASCII letter).
- ``item_head`` is ``struct "!QH"``: the request id (u64) and a status (u16), optionally followed by
  a tag whose meaning depends on the kind: in a REQUEST, the client's ``X-Request-ID`` (ASCII),
  followed by ``\n`` and the body's Content-Type when the body is a form (multipart or urlencoded);
  in a RESULT or END, extra response headers as a JSON object (an ``HTTPException``'s headers), or
  ``R`` and a JSON list of ``[name, value]`` pairs: every header of a ``Response`` that
  ``encode_response`` returned, sent as is. The same ``R`` tag marks the head of a ``StreamingResponse``
  or ``FileResponse`` returned by a unary request's ``encode_response``: a CHUNK with the response's
  status and no payload, then its body as CHUNKs, then the request's terminal RESULT (core/responses.py).
- ``item_payload`` is opaque bytes: the request body, the encoded response, a chunk, or an error body.

One message may carry several items. In a REQUEST the status field is the item's batch number within
the message: consecutive items with the same number form one batch, so one message can carry several
batches (the app coalesces what it dispatches to a worker in one event-loop turn). A RESULT with
several items answers several requests at once (the worker coalesces replies the same way). READY
and FAILED carry a single JSON item (worker facts or the setup error), STOP carries none.

A REVOKE names one batch the worker holds but may not have started (a prefetch); the worker answers
REVOKED with the ids it gave back, or nothing if it had already started them (their RESULT follows).
The worker decides in its single loop, so a request is either run there or given back, never both.
PAUSE and RESUME are flow control for a stream whose client reads slower than the worker produces:
after PAUSE the worker produces no further chunk of that request until RESUME (or CANCEL) comes; the
app sends PAUSE when the request's unsent chunks pass its stream buffer, RESUME when half of that is
sent (core/pool.py). A worker that runs several streams in one generator (a batch, continuous
batching) is never paused: one slow client would stall the others.
HEARTBEAT comes from a second DEALER of the worker (identity ``<worker identity>/hb``) on a thread,
so a worker whose main thread is stuck in a call that holds the GIL, or that is stopped, goes quiet.
That socket also carries the LOG of a ``LitAPI.log`` called from a thread of the user's own.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final, NamedTuple

VERSION: Final = 1

# app -> worker
REQUEST: Final = ord("R")  # items: (rid, batch number, x-request-id) + body
CANCEL: Final = ord("C")  # items: (rid, 0) + b""; the client left or its deadline passed
STOP: Final = ord("S")  # no items; finish what is running, then exit
REVOKE: Final = ord("V")  # items: (rid, 0) + b"" of one held batch; give it back if not started yet
PAUSE: Final = ord("P")  # items: (rid, 0) + b""; its client is behind: produce no more chunks until RESUME
RESUME: Final = ord("U")  # items: (rid, 0) + b""; go on producing chunks

# worker -> app
READY: Final = ord("Y")  # one item: (0, capacity) + JSON {"pid", "device"}
FAILED: Final = ord("F")  # one item: (0, 0) + JSON {"error"}; setup raised, the worker exits
RESULT: Final = ord("D")  # items: (rid, http status) + response body; terminal for each rid
CHUNK: Final = ord("K")  # items: (rid, 200) + one encoded stream chunk; or a streamed Response's head/body
END: Final = ord("E")  # items: (rid, status) + b"" or an error body; terminal for a stream
LOG: Final = ord("L")  # one item: (0, 0) + JSON [key, value] from LitAPI.log, for the server's loggers
REVOKED: Final = ord("G")  # items: (rid, 0) + b""; given back unstarted after a REVOKE; terminal for each rid
HEARTBEAT: Final = ord("H")  # no items; from the worker's own thread and socket, every heartbeat_interval

KINDS: Final = frozenset(
    {REQUEST, CANCEL, STOP, REVOKE, PAUSE, RESUME, READY, FAILED, RESULT, CHUNK, END, LOG, REVOKED, HEARTBEAT}
)
TERMINAL: Final = frozenset({RESULT, END})

SOCKET_DIR_PREFIX: Final = "litserve-"  # the app's private (0700) directory for its ipc:// socket
HEARTBEAT_SUFFIX: Final = b"/hb"  # identity of a worker's heartbeat socket: its own identity + this
REPLY_SUFFIX: Final = b"/out"  # identity of a ``def predict`` worker's reply socket (its main thread's)

_ITEM = struct.Struct("!QH")
ITEM_SIZE: Final = _ITEM.size
MAX_TAG_BYTES: Final = 4096

_HEADERS: Final = {kind: bytes((VERSION, kind)) for kind in KINDS}


class ProtocolError(ValueError):
    """A frame that does not follow this module's layout; the receiver drops it and logs why."""


class Item(NamedTuple):
    """One item of a message; a tuple, since a message can carry hundreds and each is built on receipt."""

    rid: int
    status: int
    payload: bytes
    tag: bytes = b""


def header(kind: int) -> bytes:
    return _HEADERS[kind]


def item_head(rid: int, status: int = 0, tag: bytes = b"") -> bytes:
    return _ITEM.pack(rid, status) + tag if tag else _ITEM.pack(rid, status)


Reply = tuple[int, int, bytes] | tuple[int, int, bytes, bytes]  # (rid, status, payload[, tag])


def encode(kind: int, items: Sequence[Reply] | None = None) -> list[bytes]:
    """Frames for ``items`` given as ``(rid, status, payload)`` or ``(rid, status, payload, tag)``."""
    frames = [_HEADERS[kind]]
    pack = _ITEM.pack
    for item in items or ():
        frames.append(pack(item[0], item[1]) + item[3] if len(item) == 4 else pack(item[0], item[1]))
        frames.append(item[2])
    return frames


def split_batches(items: list[Item]) -> list[list[Item]]:
    """A REQUEST's items grouped into batches: runs of consecutive items with the same batch number."""
    batches: list[list[Item]] = []
    last = -1
    for it in items:
        if it.status != last or not batches:
            batches.append([it])
            last = it.status
        else:
            batches[-1].append(it)
    return batches


def decode(frames: list[bytes]) -> tuple[int, list[Item]]:
    """Parse a message into its kind and items, or raise ProtocolError."""
    if not frames:
        raise ProtocolError("empty message")
    head = frames[0]
    if len(head) != 2:
        raise ProtocolError(f"header must be 2 bytes, got {len(head)}")
    if head[0] != VERSION:
        raise ProtocolError(f"unsupported protocol version {head[0]}")
    kind = head[1]
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    if len(frames) % 2 != 1:
        raise ProtocolError("items must come in (head, payload) pairs")
    items = []
    unpack = _ITEM.unpack_from
    for i in range(1, len(frames), 2):
        ihead = frames[i]
        if len(ihead) < ITEM_SIZE or len(ihead) > ITEM_SIZE + MAX_TAG_BYTES:
            raise ProtocolError(f"item head must be {ITEM_SIZE}..{ITEM_SIZE + MAX_TAG_BYTES} bytes")
        rid, status = unpack(ihead)
        items.append(Item(rid, status, frames[i + 1], ihead[ITEM_SIZE:]))
    return kind, items
