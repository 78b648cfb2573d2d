"""``Call``: one request waiting for its worker's reply, as the handler sees it.

A future for a unary call, a queue of chunks for a stream. The pool resolves it (``deliver``) or
fails it (``fail``); the handler awaits it. Nothing here knows about sockets or workers. A unary
call whose first reply is a CHUNK (the head of a ``StreamingResponse`` or ``FileResponse`` from
``encode_response``) resolves its future with that head and becomes a stream: the body follows.
A stream counts the bytes of its chunks not yet taken by the handler (``backlog``): the pool pauses
the worker past its stream buffer, the handler resumes it once the client caught up.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .protocol import CHUNK
from .scheduler import Job


class Call:
    """One request waiting for its worker's reply: a future for a unary call, a chunk queue for a stream."""

    __slots__ = ("rid", "job", "future", "_chunks", "_waiter", "_failure", "streamed", "backlog", "paused")

    def __init__(self, rid: int, job: Job, stream: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.rid = rid
        self.job = job
        self.future: asyncio.Future[tuple[int, bytes, bytes]] = loop.create_future()
        self._chunks: deque[tuple[int, int, bytes, bytes]] | None = deque() if stream else None
        self._waiter: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None  # what ended a stream early (``fail``)
        self.streamed = False  # a chunk reached it: it must not be run again
        self.backlog = 0  # bytes of chunks delivered and not yet taken by the handler
        self.paused = False  # PAUSE sent to its worker, no RESUME yet

    def deliver(self, kind: int, status: int, payload: bytes, tag: bytes = b"") -> None:
        """A reply arrived: (status, payload, tag) for a unary call, the next item of a stream."""
        if self._chunks is None:
            if not self.future.done():
                self.future.set_result((status, payload, tag))
                if kind == CHUNK:  # the head of a streamed Response (core/responses.py): a stream from now on
                    self._chunks = deque()
                    self.streamed = True
            return
        self.streamed = True
        self.backlog += len(payload)
        self._chunks.append((kind, status, payload, tag))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
            self.future.exception()  # mark retrieved: nobody may be awaiting it any more
        if self._failure is None:
            # Also for a streamed Response, whose future already holds its head: the handler, maybe
            # busy sending a chunk now, must see the failure once the chunks before it are taken.
            self._failure = exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
            self._waiter.exception()

    async def next_chunk(self) -> tuple[int, int, bytes, bytes]:
        """The next (kind, status, payload, tag) of a stream; raises what ``fail`` was given."""
        assert self._chunks is not None
        while not self._chunks:
            if self._failure is not None:
                raise self._failure
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        item = self._chunks.popleft()
        self.backlog -= len(item[2])
        return item
