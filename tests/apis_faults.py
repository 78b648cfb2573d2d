"""LitAPI classes for the fault, limit, drain, fuzz and leak tests (issue 4).

They live in an importable module, not in the test files, because spawned workers unpickle them by
reference. Everything a test needs to control (a setup that fails, a request that blocks) is driven
by files whose paths are given to the constructor, so no test ever sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from starlette.exceptions import HTTPException

import litserve as ls


class FaultAPI(ls.LitAPI):
    """A sync API whose body says what to do; its setup fails while ``fail_path`` exists.

    Every setup appends ``"<time.time()> ok|fail <pid>"`` to ``starts_path`` (when given), so a test can
    see when each worker start happened and how far apart the failed ones were.

    {"op": "echo", "value": v}   -> {"value": v, "pid": pid, "request_id": litserve.request_id()}
    {"op": "raise"}              -> ValueError (500), logged by the worker with the request id
    {"op": "http", "status": s}  -> HTTPException(s)
    {"op": "block", "path": p}   -> writes p + ".started" (its pid), blocks until p exists
    {"op": "exit"}               -> the worker process dies (os._exit)
    {"op": "float", "value": s}  -> {"value": float(s)}: "nan" or "inf" make encode_response's output non-finite
    """

    def __init__(self, fail_path: str | None = None, starts_path: str | None = None, **kw) -> None:
        super().__init__(**kw)
        self.fail_path = fail_path
        self.starts_path = starts_path

    def setup(self, device):
        failing = self.fail_path is not None and os.path.exists(self.fail_path)
        if self.starts_path is not None:
            with open(self.starts_path, "a") as f:
                f.write(f"{time.time()} {'fail' if failing else 'ok'} {os.getpid()}\n")
        if failing:
            raise RuntimeError("setup refused: the fail file exists")
        self.device = device

    def predict(self, x):
        op = x.get("op") if isinstance(x, dict) else None
        if op == "raise":
            raise ValueError("the model refused this input")
        if op == "http":
            raise HTTPException(status_code=int(x["status"]), detail="custom detail")
        if op == "block":
            path = Path(x["path"])
            # Written whole, then renamed into place: a test polling for it never reads it half-written
            # (the second worker rewrites it when the request is retried there).
            tmp = Path(f"{path}.started.{os.getpid()}")
            tmp.write_text(str(os.getpid()))
            tmp.replace(str(path) + ".started")
            deadline = time.monotonic() + 30
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.002)  # model: a slow computation the test releases by creating the file
            return {"released": path.exists(), "pid": os.getpid()}
        if op == "exit":
            os._exit(3)
        if op == "float":
            return {"value": float(x["value"])}
        value = x.get("value") if isinstance(x, dict) else x
        return {"value": value, "pid": os.getpid(), "request_id": ls.request_id()}


class AsyncMixedAPI(ls.LitAPI):
    """An async API for the leak test: many requests in flight per worker, cheap sleeps.

    {"op": "echo", "value": v}       -> {"value": v}
    {"op": "raise"}                  -> ValueError (500)
    {"op": "http", "status": s}      -> HTTPException(s)
    {"op": "sleep", "seconds": s}    -> awaits s seconds, then echoes (used for timeouts and disconnects)
    """

    def __init__(self) -> None:
        super().__init__(max_concurrency=64)

    def setup(self, device):
        pass

    async def predict(self, x):
        op = x.get("op")
        if op == "raise":
            raise ValueError("the model refused this input")
        if op == "http":
            raise HTTPException(status_code=int(x["status"]), detail="custom detail")
        if op == "sleep":
            await asyncio.sleep(float(x["seconds"]))  # model: slow I/O
        return {"value": x.get("value")}


class AnyJSONAPI(ls.LitAPI):
    """Accepts any JSON value and echoes it: the fuzz target, where a 5xx can only be litserve's fault."""

    def setup(self, device):
        pass

    def predict(self, x):
        return {"echo": x}
