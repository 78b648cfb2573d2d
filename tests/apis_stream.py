"""LitAPI classes for the batching, streaming and async tests (tests/test_batching.py, test_streaming.py,
test_async.py). They live in an importable module because spawned workers unpickle them by reference.

Slow "models" here never sleep for a fixed time: they wait for a gate file that the test creates
(``_wait_for_file``), with a 30 s backstop so a broken test cannot hang a worker forever. Every API
takes a ``log`` path in its constructor (the instance travels to the worker with it) and appends one
JSON line per thing it did, so a test can assert what the worker saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from starlette.exceptions import HTTPException

import litserve as ls

BACKSTOP = 30.0  # seconds a gated model waits at most


def _wait_for_file(path: str | Path) -> bool:
    """Block until ``path`` exists (the test's release), at most BACKSTOP seconds."""
    path = Path(path)
    deadline = time.monotonic() + BACKSTOP
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)  # the model's "computation": polling a gate the test controls
    return True


async def _await_file(path: str | Path) -> bool:
    path = Path(path)
    deadline = time.monotonic() + BACKSTOP
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)  # model: poll for the gate file, bounded by BACKSTOP
    return True


class _Logged:
    def _log(self, **record) -> None:
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_log(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


# -- batching -------------------------------------------------------------------------------------------
class BatchAPI(_Logged, ls.LitAPI):
    """Requests are dicts; the default ``batch()`` gives predict a list of them.

    {"x": n}                    -> {"y": n * n, "x": n, "batch_size": size of the batch it ran in}
    {"op": "block", "path": p}  -> its batch writes p + ".started" and waits until p exists
    {"op": "raise"}             -> predict raises ValueError (for the whole batch)
    {"op": "short"}             -> unbatch returns one output too few (for the whole batch)

    Each predict call logs ``{"batch": [tag or x of each item]}``.
    """

    def __init__(self, log: str = "", **kw) -> None:
        super().__init__(**kw)
        self.log_path = log

    def setup(self, device):
        self.pid = os.getpid()

    def predict(self, batch):
        assert isinstance(batch, list), type(batch)
        self._log(batch=[item.get("tag", item.get("x")) for item in batch])
        for item in batch:
            if item.get("op") == "block":
                Path(item["path"] + ".started").write_text(str(os.getpid()))
                _wait_for_file(item["path"])
        if any(item.get("op") == "raise" for item in batch):
            raise ValueError("the model refused this batch")
        out = [
            {
                "x": item.get("x"),
                "y": item["x"] * item["x"] if "x" in item else None,
                "batch_size": len(batch),
                "pid": self.pid,
            }
            for item in batch
        ]
        if any(item.get("op") == "short" for item in batch):
            out.append("short")  # marker read by unbatch
        return out

    def unbatch(self, output):
        if output and output[-1] == "short":
            return output[:-2]
        return output


class ArrayBatchAPI(ls.LitAPI):
    """{"kind": "torch"|"numpy"|"list", "x": [..]} decoded into that type; the default ``batch()``
    decides what predict gets, and each response says what that was."""

    def decode_request(self, request):
        if request["kind"] == "torch":
            import torch

            return torch.tensor(request["x"], dtype=torch.float32)
        if request["kind"] == "numpy":
            import numpy

            return numpy.asarray(request["x"], dtype=numpy.float32)
        return list(request["x"])

    def predict(self, batch):
        kind = f"{type(batch).__module__.split('.')[0]}.{type(batch).__name__}"
        if hasattr(batch, "shape"):
            shape = list(batch.shape)
            rows = [row.sum().item() for row in batch]
        else:
            shape = [len(batch)]
            rows = [sum(row) for row in batch]
        return [{"batched_as": kind, "shape": shape, "sum": s} for s in rows]


# -- streaming ------------------------------------------------------------------------------------------
class StreamAPI(_Logged, ls.LitAPI):
    """A sync generator. Request fields:

    {"n": 3}                                   -> {"i": 0}, {"i": 1}, {"i": 2}
    {"op": "http", "status": 418}              -> HTTPException before the first chunk
    {"op": "raise_before"}                     -> ValueError before the first chunk
    {"op": "raise_after", "n": 2}              -> 2 chunks, then ValueError
    {"op": "gated", "gate": g, "n": 3}         -> before chunk i (i >= "free", default 0) waits for the
                                                  file g + "." + i; every chunk made and the
                                                  generator's ``finally`` are logged with "tag".
    """

    def __init__(self, log: str = "", **kw) -> None:
        super().__init__(stream=True, **kw)
        self.log_path = log

    def predict(self, x):
        op, tag = x.get("op"), x.get("tag")
        if op == "http":
            raise HTTPException(status_code=x["status"], detail="not a teapot today")
        if op == "raise_before":
            raise ValueError("bad input, refused before streaming")
        try:
            for i in range(x.get("n", 3)):
                if op == "raise_after" and i == x["n"] - 1:
                    raise ValueError(f"model broke after {i} chunks")
                if op == "gated" and i >= x.get("free", 0):
                    self._log(tag=tag, waiting=i)
                    _wait_for_file(f"{x['gate']}.{i}")
                self._log(tag=tag, chunk=i)
                yield {"i": i}
        finally:
            self._log(tag=tag, closed=True)

    def encode_response(self, output):
        yield from output


# -- async ----------------------------------------------------------------------------------------------
class _Barrier:
    """A cyclic barrier for one worker's event loop: the n-th arrival releases the n waiting."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrived = 0
        self.events: dict[int, asyncio.Event] = {}

    async def wait(self, timeout: float) -> bool:
        generation = self.arrived // self.n
        self.arrived += 1
        event = self.events.setdefault(generation, asyncio.Event())
        if self.arrived % self.n == 0:
            event.set()
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


class AsyncAPI(_Logged, ls.LitAPI):
    """``async def predict``. Request fields:

    {"barrier": name, "n": 4}   -> waits until n requests of that barrier are in flight together;
                                   answers {"passed": bool, "max_in_flight": ..., "pid": ...}
    {"op": "gated", "gate": p}  -> awaits the file p; logs "started", then "cancelled" if its task is
                                   cancelled, and "finally" either way (with "tag")
    {"op": "raise"}             -> ValueError
    """

    def __init__(self, log: str = "", **kw) -> None:
        super().__init__(**kw)
        self.log_path = log

    def setup(self, device):
        self.in_flight = 0
        self.max_in_flight = 0
        self.barriers: dict[str, _Barrier] = {}

    async def predict(self, x):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        tag = x.get("tag")
        try:
            if x.get("op") == "raise":
                raise ValueError("async model refused")
            if x.get("op") == "gated":
                self._log(tag=tag, started=True)
                try:
                    await _await_file(x["gate"])
                except asyncio.CancelledError:
                    self._log(tag=tag, cancelled=True)
                    raise
                finally:
                    self._log(tag=tag, final=True)
                return {"released": True}
            barrier = self.barriers.setdefault(x["barrier"], _Barrier(x["n"]))
            passed = await barrier.wait(timeout=5.0)
            return {"passed": passed, "max_in_flight": self.max_in_flight, "pid": os.getpid()}
        finally:
            self.in_flight -= 1


class AsyncStreamAPI(_Logged, ls.LitAPI):
    """An async generator ``predict`` with ``stream=True``. Request fields:

    {"n": 3}                                 -> {"i": 0} .. {"i": 2}
    {"n": 3, "barrier": name, "k": 2}        -> before its first chunk waits until k streams of that
                                                barrier are running together ({"passed": bool} first)
    {"op": "gated", "gate": p, "n": 3}       -> chunk 0, then awaits the file p before each next chunk;
                                                logs "cancelled" / "closed" from the generator
    {"op": "raise_after", "n": 2}            -> 1 chunk, then ValueError
    {"op": "blocking", "n": 3}               -> chunks made by a blocking call, never yielding to the loop
                                                between them; its ``finally`` awaits, then logs "cleaned"
    """

    def __init__(self, log: str = "", **kw) -> None:
        super().__init__(stream=True, **kw)
        self.log_path = log

    def setup(self, device):
        self.barriers: dict[str, _Barrier] = {}

    async def predict(self, x):
        tag = x.get("tag")
        try:
            if x.get("op") == "blocking":
                try:
                    for i in range(x.get("n", 3)):
                        time.sleep(0.005)  # model: a blocking call per chunk (a sync model inside async predict)
                        yield {"i": i}
                finally:
                    await asyncio.sleep(0)  # model: async cleanup (release a slot, close a session)
                    self._log(tag=tag, cleaned=True)
                return
            if "barrier" in x:
                barrier = self.barriers.setdefault(x["barrier"], _Barrier(x["k"]))
                yield {"passed": await barrier.wait(timeout=5.0)}
            for i in range(x.get("n", 3)):
                if x.get("op") == "raise_after" and i == 1:
                    raise ValueError("async stream broke")
                if x.get("op") == "gated" and i > 0:
                    self._log(tag=tag, waiting=i)
                    await _await_file(x["gate"])
                self._log(tag=tag, chunk=i)
                yield {"i": i}
                await asyncio.sleep(0)  # model: yield to the loop between chunks
        except asyncio.CancelledError:
            self._log(tag=tag, cancelled=True)
            raise
        finally:
            self._log(tag=tag, closed=True)


# -- flow control (tests/test_stream_flow.py) -------------------------------------------------------------
FLOOD_PACE = 0.0005  # seconds the flood "model" computes per chunk: about 2,000 chunks/s at most


def _flood_line(i: int, size: int) -> str:
    """Chunk ``i`` of a flood: its index, then filler, ``size`` characters in all (the newline is the
    server's). Making it takes FLOOD_PACE (a blocking call, as a model's step is), so how far the
    worker gets ahead of a paused client does not depend on how fast this machine copies bytes."""
    time.sleep(FLOOD_PACE)  # the model's computation, not synchronisation
    return f"{i:08d}".ljust(size, "x")


class _Flood(_Logged):
    def flood(self, tag: str, n: int, size: int, end: str = ""):
        """The flood itself, for every API below: n chunks, logging {"made": i} every 50 chunks and
        {"closed": made} from its ``finally``."""
        made = 0
        try:
            for i in range(n):
                if i % 50 == 0:
                    self._log(tag=tag, made=i)
                yield _flood_line(i, size) + end
                made = i + 1
        finally:
            self._log(tag=tag, closed=made)


class FloodAPI(_Flood, ls.LitAPI):
    """A sync generator, one chunk per FLOOD_PACE: {"n": 1000, "size": 65536, "tag": t} -> n raw text chunks
    of ``size`` characters."""

    def __init__(self, log: str = "", **kw) -> None:
        super().__init__(stream=True, **kw)
        self.log_path = log

    def predict(self, x):
        yield from self.flood(x["tag"], x["n"], x["size"])

    def encode_response(self, output):
        yield from output


class AsyncFloodAPI(FloodAPI):
    """FloodAPI with an async generator ``predict`` (that never yields to the loop: each chunk blocks)."""

    encode_response = ls.LitAPI.encode_response  # chunks as they are

    async def predict(self, x):
        chunks = self.flood(x["tag"], x["n"], x["size"])
        try:
            for chunk in chunks:
                yield chunk
        finally:
            chunks.close()  # its finally logs "closed" now, when the stream is closed


class FloodResponseAPI(FloodAPI):
    """The same flood as the body of a ``StreamingResponse`` returned by a unary API's ``encode_response``."""

    def __init__(self, log: str = "", **kw) -> None:
        ls.LitAPI.__init__(self, **kw)
        self.log_path = log

    def predict(self, x):
        return x

    def encode_response(self, x):
        from starlette.responses import StreamingResponse

        return StreamingResponse(self.flood(x["tag"], x["n"], x["size"], end="\n"), media_type="text/plain")


class FloodLLM(_Flood, ls.LitAPI):
    """FloodAPI behind ``OpenAISpec``: the last message's content "<tag> <n> <size>" -> n chunks of text."""

    def __init__(self, log: str = "", **kw) -> None:
        super().__init__(spec=ls.OpenAISpec(), **kw)
        self.log_path = log

    def predict(self, messages):
        tag, n, size = messages[-1]["content"].split()
        yield from self.flood(tag, int(n), int(size))
