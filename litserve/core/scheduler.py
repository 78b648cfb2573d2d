"""Which queued request goes to which worker, and when: a pure state machine.

Requests wait here, in the app, until a worker has room, so a request whose client left or whose
deadline passed is simply dropped before any worker sees it. Workers announce a capacity (dispatch
slots); one slot holds one batch. ``schedule(now)`` is run after every event (submit, ready, reply,
cancel, death, batch deadline) and returns what to send plus when to run it again. There is no I/O and
no clock in here: time is passed in, so it is tested with plain numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

QUEUED, DISPATCHED, DROPPED = "queued", "dispatched", "dropped"


class Job:
    """One request as the scheduler sees it: opaque payload, enqueue time, where it went."""

    __slots__ = ("rid", "payload", "tag", "enqueued_at", "state", "batch", "retried")

    def __init__(self, rid: int, payload: bytes, tag: bytes = b"", enqueued_at: float = 0.0) -> None:
        self.rid = rid
        self.payload = payload
        self.tag = tag
        self.enqueued_at = enqueued_at
        self.state = QUEUED
        self.batch: Batch | None = None
        self.retried = False  # requeued once already after its worker died

    def __repr__(self) -> str:
        return f"<Job {self.rid} {self.state}>"


@dataclass(eq=False)
class Batch:
    """Jobs sent to one worker together; its slot frees when every job in it has had a terminal reply."""

    worker: str
    rids: list[int]
    open: int = 0


@dataclass(eq=False)
class WorkerSlots:
    name: str
    capacity: int
    busy: int = 0
    sequential: bool = False
    batches: deque[Batch] = field(default_factory=deque)  # in flight, in dispatch order

    @property
    def free(self) -> int:
        return self.capacity - self.busy


class Scheduler:
    """Queue, per-worker capacity, batching window, cancel decisions.

    Args:
        max_batch_size: most jobs put in one batch.
        batch_timeout: seconds the oldest queued job may wait for a batch to fill.
        max_queue_size: most jobs waiting for a worker; ``submit`` refuses beyond it.
    """

    def __init__(self, max_batch_size: int = 1, batch_timeout: float = 0.0, max_queue_size: int = 1024) -> None:
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.max_queue_size = max_queue_size
        self._queue: deque[Job] = deque()  # arrival order; dropped jobs are skipped lazily
        self._queued = 0  # live jobs in _queue
        self._dispatched: dict[int, Job] = {}
        self._workers: dict[str, WorkerSlots] = {}
        self._rr = 0

    # -- events ---------------------------------------------------------------------------------------
    def add_worker(self, name: str, capacity: int, *, sequential: bool = False) -> None:
        """Register a worker with ``capacity`` slots.

        ``sequential``: the worker runs what it holds one batch after another, so its extra slots
        are a prefetch queue, not parallelism. Such a worker is given a partial batch only when it
        is idle: while it is busy, requests keep filling the next batch here in the app.
        """
        self._workers[name] = WorkerSlots(name, max(1, capacity), sequential=sequential)

    def remove_worker(self, name: str, *, retry_waiting: bool = False) -> list[int]:
        """Forget a worker; return the ids of the jobs lost with it (they will get no reply).

        With ``retry_waiting`` (a worker that runs its batches one after another, in order), only
        its oldest open batch was running; the batches waiting behind it go back to the front of the
        queue, once. A job that is lost a second time is not retried again, so a request that
        crashes workers costs at most two of them.
        """
        slots = self._workers.pop(name, None)
        if slots is None:
            return []
        lost: list[int] = []
        retry: list[Job] = []
        for i, batch in enumerate(slots.batches):
            for rid in batch.rids:
                job = self._dispatched.pop(rid, None)
                if job is None:
                    continue  # already answered
                job.batch = None
                if retry_waiting and i > 0 and not job.retried:
                    job.retried = True
                    retry.append(job)
                else:
                    job.state = DROPPED
                    lost.append(rid)
        for job in reversed(retry):
            job.state = QUEUED
            self._queue.appendleft(job)
        self._queued += len(retry)
        return lost

    def submit(self, job: Job) -> bool:
        """Queue a job; False when the queue is full (the caller answers 503)."""
        if self._queued >= self.max_queue_size:
            return False
        job.state = QUEUED
        self._queue.append(job)
        self._queued += 1
        return True

    def cancel(self, rid: int, job: Job | None = None) -> str | None:
        """Stop caring about a job. Returns the worker to send CANCEL to, or None if none saw it."""
        job = job if job is not None else self._dispatched.get(rid)
        if job is None:
            return None
        if job.state == QUEUED:
            job.state = DROPPED
            job.payload = b""
            self._queued -= 1
            self._trim()
            if len(self._queue) > 2 * self._queued + 64:
                # Dropped jobs stuck behind a live head would otherwise pile up without bound.
                self._queue = deque(j for j in self._queue if j.state == QUEUED)
            return None
        if job.state == DISPATCHED and job.batch is not None:
            return job.batch.worker
        return None

    def complete(self, rid: int, worker: str) -> bool:
        """A terminal reply arrived for ``rid`` from ``worker``; False if that worker does not hold it."""
        job = self._dispatched.get(rid)
        if job is None or job.batch is None or job.batch.worker != worker:
            return False
        del self._dispatched[rid]
        batch = job.batch
        job.batch = None
        job.state = DROPPED
        batch.open -= 1
        if batch.open == 0:
            slots = self._workers.get(worker)
            if slots is not None:
                slots.busy -= 1
                if slots.batches[0] is batch:
                    slots.batches.popleft()
                else:
                    slots.batches.remove(batch)
        return True

    def holds(self, rid: int, worker: str) -> bool:
        job = self._dispatched.get(rid)
        return job is not None and job.batch is not None and job.batch.worker == worker

    # -- the decision ---------------------------------------------------------------------------------
    def schedule(self, now: float) -> tuple[list[tuple[str, list[Job]]], float | None]:
        """Assign queued jobs to workers with room. Returns ``(dispatches, wake_at)``.

        ``wake_at`` is when a partly filled batch's window closes (call again then), or None.
        """
        dispatches: list[tuple[str, list[Job]]] = []
        while self._queued:
            slots = self._pick_worker()
            if slots is None:
                return dispatches, None
            take = min(self._queued, self.max_batch_size)
            if take < self.max_batch_size and slots.sequential and slots.busy:
                return dispatches, None  # the next completion frees an idle worker and reschedules
            if take < self.max_batch_size and self.batch_timeout > 0:
                oldest = self._oldest()
                closes = oldest.enqueued_at + self.batch_timeout
                if now < closes:
                    return dispatches, closes
            jobs = self._pop(take)
            batch = Batch(slots.name, [j.rid for j in jobs], len(jobs))
            for job in jobs:
                job.state = DISPATCHED
                job.batch = batch
                self._dispatched[job.rid] = job
            slots.busy += 1
            slots.batches.append(batch)
            dispatches.append((slots.name, jobs))
        return dispatches, None

    # -- views ----------------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self._queued

    @property
    def in_flight(self) -> int:
        return len(self._dispatched)

    @property
    def workers(self) -> dict[str, WorkerSlots]:
        return self._workers

    def __repr__(self) -> str:
        load = ", ".join(f"{w.name}={w.busy}/{w.capacity}" for w in self._workers.values())
        return f"<Scheduler queued={self._queued} in_flight={len(self._dispatched)} workers=[{load}]>"

    # -- internals ------------------------------------------------------------------------------------
    def _pick_worker(self) -> WorkerSlots | None:
        """The worker with the most free slots; ties go round-robin so load spreads evenly."""
        best: WorkerSlots | None = None
        workers = list(self._workers.values())
        n = len(workers)
        for i in range(n):
            w = workers[(self._rr + i) % n]
            if w.free > 0 and (best is None or w.free > best.free):
                best = w
        if best is not None:
            self._rr = (workers.index(best) + 1) % n
        return best

    def _oldest(self) -> Job:
        self._trim()
        return self._queue[0]

    def _trim(self) -> None:
        queue = self._queue
        while queue and queue[0].state != QUEUED:
            queue.popleft()

    def _pop(self, n: int) -> list[Job]:
        out: list[Job] = []
        queue = self._queue
        while len(out) < n:
            job = queue.popleft()
            if job.state == QUEUED:
                out.append(job)
        self._queued -= len(out)
        self._trim()
        return out
