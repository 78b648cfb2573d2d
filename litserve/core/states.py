"""The named states of the serving core, in one place, so the type checker sees every transition.

Each is a ``str`` enum: it compares equal to its value (``pool.state == "running"``) and reads as
the value in JSON (``/info``) and in log lines.

::

    PoolState     new ─▶ starting ─▶ running ─▶ draining ─▶ stopped
                          │   ▲ (a failed start of a lazily started pool goes back to new)
                          └───┘
    WorkerState   starting ─▶ ready ─▶ stopping ─▶ dead      (starting ─▶ dead: setup failed or timed out;
                                 └──────────────────▶ dead    ready ─▶ dead: crashed, exited or killed as hung)
    JobState      queued ─▶ dispatched ─▶ dropped            (dispatched ─▶ queued: revoked, or its worker died)
                    └──────────────────────▶ dropped         (cancelled while queued)
    ExitReason    why a worker is replaced: crash, hung, exit, setup (the label of litserve_worker_restarts)
"""

from __future__ import annotations

from enum import Enum


class _State(str, Enum):
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class PoolState(_State):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class WorkerState(_State):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    DEAD = "dead"


class JobState(_State):
    QUEUED = "queued"  # waiting in the app's queue
    DISPATCHED = "dispatched"  # in a batch on a worker (running, or held there not started)
    DROPPED = "dropped"  # answered, cancelled while queued, or lost with its worker


class ExitReason(_State):
    CRASH = "crash"  # exited with an error code or a signal we did not send
    HUNG = "hung"  # killed by the app: past its request's timeout + hung_grace, or no heartbeat
    EXIT = "exit"  # exited with code 0 while it should have been serving
    SETUP = "setup"  # a replacement's setup failed and it is started again (with backoff)
