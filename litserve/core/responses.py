"""A Starlette/FastAPI ``Response`` returned by ``encode_response``, turned into replies in the worker.

- A ``Response`` with its body in memory (``Response``, ``JSONResponse``, ``PlainTextResponse``, ...):
  one RESULT with its status and body; its headers travel in the tag (``R`` + a JSON list of
  ``[name, value]`` pairs), and the app sends them as they are.
- A ``StreamingResponse`` or ``FileResponse``: the body is produced here, in the worker, and sent as it
  comes (``Pipeline.unary`` drives it): first a CHUNK with the response's status, the same ``R``
  headers tag and no payload (the head: it turns the app's unary call into a stream), then one CHUNK
  per piece of the body, then the request's terminal RESULT: 200 when the body ended, or the error
  reply when producing it raised (the app ends the body with that error, as for ``stream=True``).
  A file is read ``chunk_size`` bytes at a time, so the worker's memory does not grow with its size,
  and it is read to its end before the reply is complete, so a background task may delete it.
- The response's ``background`` task(s) run in the worker once the body has been produced.

Nothing here is on the path of a plain JSON reply: ``Pipeline`` looks here only after
``encode_response`` returned a ``Response``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pydantic_core
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import FileResponse, Response, StreamingResponse

from . import protocol as P

RAW_RESPONSE_TAG = b"R"  # a RESULT (or head CHUNK) tag starting with this carries a Response's own headers
STREAMED = (StreamingResponse, FileResponse)  # responses whose body is produced while it is sent
_THREADPOOL_CODE = iterate_in_threadpool.__code__


def response_reply(response: Response) -> tuple[int, bytes, bytes]:
    """A ``Response`` with its body in memory as (status, body, tag): its headers travel in the tag."""
    body = getattr(response, "body", None)
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"encode_response returned a {type(response).__name__} without a body")
    return response.status_code, bytes(body), headers_tag(response)


def headers_tag(response: Response) -> bytes:
    """``R`` + the response's headers as JSON pairs (at most ``MAX_TAG_BYTES`` in all)."""
    pairs = [[name.decode("latin-1"), value.decode("latin-1")] for name, value in response.raw_headers]
    tag = RAW_RESPONSE_TAG + pydantic_core.to_json(pairs)
    if len(tag) > P.MAX_TAG_BYTES:
        raise ValueError(f"the Response's headers are {len(tag)} bytes; at most {P.MAX_TAG_BYTES} can be sent")
    return tag


def body_of(response: StreamingResponse | FileResponse, in_loop: bool) -> Iterator[bytes] | AsyncIterator[bytes]:
    """The body of a streamed response as an iterator of bytes the worker's loop can drive.

    ``in_loop``: the worker runs an event loop (``async def predict``), so an async iterator is fine;
    the blocking loop gets a plain iterator (an async one is driven by a private event loop). A file
    is opened (and its size, date and ETag headers set) here, before the head goes out, so a missing
    file is a plain error reply.
    """
    if isinstance(response, FileResponse):
        stat = os.stat(response.path)  # FileNotFoundError: a 500 naming the path, before anything is sent
        if response.stat_result is None:
            response.set_stat_headers(stat)
        return _file_chunks(open(response.path, "rb"), response.chunk_size)  # noqa: SIM115  # closed by the generator
    body: Any = response.body_iterator  # Starlette makes every body an async iterator
    if getattr(body, "ag_code", None) is _THREADPOOL_CODE:  # Starlette's wrapper of a plain iterator: unwrap it
        inner = body.ag_frame.f_locals.get("iterator")
        if inner is not None:
            return _encoded(iter(inner), response.charset)
    if in_loop:
        return _aencoded(body, response.charset)
    return _encoded(_drive(body), response.charset)


def _file_chunks(file: Any, size: int) -> Iterator[bytes]:
    with file:
        while chunk := file.read(size):
            yield chunk


def _as_bytes(chunk: Any, charset: str) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode(charset)
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"a StreamingResponse's body must yield str or bytes, got {type(chunk).__name__}")


def _encoded(chunks: Iterator[Any], charset: str) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            yield _as_bytes(chunk, charset)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def _aencoded(chunks: AsyncIterator[Any], charset: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield _as_bytes(chunk, charset)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _drive(chunks: AsyncIterator[Any]) -> Iterator[Any]:
    """An async iterator as a plain one, on a private event loop (the blocking worker has none)."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(chunks.__anext__())
            except StopAsyncIteration:
                return
    finally:
        try:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                loop.run_until_complete(aclose())
        finally:
            loop.close()


def background_step(background: BackgroundTask, in_loop: bool) -> Any:
    """Run a response's background task(s): an awaitable for the async worker, done at once otherwise."""
    if in_loop:
        return background()
    asyncio.run(_call(background))
    return None


async def _call(background: BackgroundTask) -> None:
    await background()
