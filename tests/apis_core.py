"""LitAPI classes for the core tests (protocol, worker loop, timeouts, mounting, server).

Importable by spawned workers, which unpickle these classes by reference.
"""

from __future__ import annotations

import os
import threading

from apis import BehaviourAPI

import litserve as ls


class PidAPI(ls.LitAPI):
    """{"value": v} -> {"value": v, "pid": worker pid, "ppid": the HTTP process that spawned it}."""

    def setup(self, device):
        self.device = device

    def predict(self, x):
        return {"value": x.get("value"), "pid": os.getpid(), "ppid": os.getppid(), "device": self.device}


class RecordingAPI(ls.LitAPI):
    """For driving a worker loop inside the test process: records every predict input, and blocks
    on ``{"op": "block"}`` until the test sets ``release`` (``entered`` is set when it starts)."""

    def setup(self, device):
        self.calls = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.gates: dict[str, tuple[threading.Event, threading.Event]] = {}  # key -> (entered, release)

    def gate(self, key: str) -> tuple[threading.Event, threading.Event]:
        """``{"op": "hold", "key": key}`` sets the first event when it starts and waits for the second."""
        return self.gates.setdefault(key, (threading.Event(), threading.Event()))

    def predict(self, x):
        self.calls.append(x)
        if x.get("op") == "hold":
            entered, release = self.gates[x["key"]]
            entered.set()
            if not release.wait(30):
                raise TimeoutError("the test never released the held predict")
        if x.get("op") == "block":
            self.entered.set()
            if not self.release.wait(30):
                raise TimeoutError("the test never released the blocked predict")
        if x.get("op") == "raise":
            raise ValueError("refused")
        return {"echo": x.get("value")}


class BatchedBehaviourAPI(BehaviourAPI):
    """BehaviourAPI with batching on: a sync worker then holds one batch at a time (capacity 1), so
    a second request waits in the app's queue, not in the worker."""

    def __init__(self):
        super().__init__(max_batch_size=2, batch_timeout=0.0)

    def predict(self, xs):
        return [BehaviourAPI.predict(self, x) for x in xs]


class AsyncEchoAPI(ls.LitAPI):
    """``async def predict`` that records its inputs and echoes ``value`` (for driving AsyncRunner)."""

    def setup(self, device):
        self.calls = []

    async def predict(self, x):
        self.calls.append(x)
        return {"echo": x.get("value")}


class ThreadLogAPI(ls.LitAPI):
    """{"logs": "start"} starts a thread of the API's own that calls ``self.log("tick", i)`` for i = 0, 1,
    ... every 0.2 ms while later requests run; {"logs": "stop"} stops it -> {"sent": how many};
    {"value": v} -> {"echo": v}."""

    def setup(self, device):
        self.stop = threading.Event()
        self.sent = 0
        self.thread = None

    def _ticks(self):
        while not self.stop.wait(0.0002):  # the pace of a busy monitor
            self.log("tick", self.sent)
            self.sent += 1

    def predict(self, x):
        if x.get("logs") == "start":
            self.thread = threading.Thread(target=self._ticks, daemon=True)
            self.thread.start()
        elif x.get("logs") == "stop":
            self.stop.set()
            self.thread.join()
            return {"sent": self.sent}
        return {"echo": x.get("value")}


class AsyncThreadLogAPI(ThreadLogAPI):
    async def predict(self, x):
        return ThreadLogAPI.predict(self, x)
