"""Which queued request goes to which worker, and when: a pure state machine.

Requests wait here, in the app, in arrival order, until a worker can *run* them: a request handed to
a busy worker would be stranded there if another worker freed first, would escape the queue bound,
and would be lost with the worker if it hung. Each worker has

- **run slots**: batches it runs at once (1 for a ``def predict`` worker, ``max_concurrency`` for an
  ``async def predict`` one). A batch is one request when batching is off.
- **prefetch slots** (16 for a ``def predict`` worker, 1 for a batched one, 0 for an async one or
  a stream): batches it may hold,
  not started, behind its running ones, so it goes straight from one batch to the next without
  waiting for a round trip. A batched API's prefetch takes only a full batch. With
  ``prefetch_below`` set, prefetch slots are used only while the work is fast: while the mean run
  time per batch, as measured here from each batch's start to its last reply, is below that many
  seconds (known from the first reply on).
  There the round trip is a real share of each request; for slower work it is not, and every
  request then waits in the one shared queue, in arrival order (no request is parked behind a long
  one). A held batch is *revocable*: when another worker has a free run slot and nothing is queued,
  ``revocations()`` names held batches to take back (REVOKE); the worker returns the ones it has not
  started (REVOKED) and they go back to the front of the queue. The worker decides, in its single
  loop, whether a request started or went back, so no request runs twice and none is lost.

The invariants (tests/test_scheduler.py checks them after every event, property-based):

1. *While a request waits, no worker that could run it is idle*: after ``schedule`` and
   ``revocations``, if a worker has a free run slot, nothing queued is dispatchable (the queue is
   empty, or its batch window is still open and ``wake_at`` says when it closes) and held batches
   are being revoked, one per free run slot (all of them if there are fewer).
2. *No request starts on two workers*: a job is in at most one batch; it is dispatched again only
   after its worker gave it back (REVOKED) or died.
3. *Every accepted request that has not started counts against max_queue_size*: ``waiting`` is the
   queue plus every held (prefetched, not started) job; ``submit`` refuses at the bound.

``schedule(now)`` is run after every event (submit, ready, reply, revoke, cancel, death, batch
deadline) and returns what to send plus when to run it again. ``overdue(now)`` names workers that
look hung (a request still running ``hung_grace`` after its timeout; no heartbeat for
``heartbeat_timeout`` while busy). There is no I/O and no clock in here: time is passed in, so it is
tested with plain numbers.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from .states import JobState

QUEUED, DISPATCHED, DROPPED = JobState.QUEUED, JobState.DISPATCHED, JobState.DROPPED
RUN_TIME_WEIGHT = 0.1  # of the newest batch in the mean run time: about the last 10-20 batches count


class Job:
    """One request as the scheduler sees it: opaque payload, enqueue time, where it went."""

    __slots__ = ("rid", "payload", "tag", "enqueued_at", "state", "batch", "retried", "cancelled")

    def __init__(self, rid: int, payload: bytes, tag: bytes = b"", enqueued_at: float = 0.0) -> None:
        self.rid = rid
        self.payload = payload
        self.tag = tag
        self.enqueued_at = enqueued_at
        self.state = QUEUED
        self.batch: Batch | None = None
        self.retried = False  # requeued once already because its worker died while running it
        self.cancelled = False  # the app gave up on it while a worker held it: it is never queued again

    def __repr__(self) -> str:
        return f"<Job {self.rid} {self.state.value}>"


class Batch:
    """Jobs sent to one worker together; its slot frees when every job in it has had a terminal reply."""

    __slots__ = ("worker", "rids", "open", "started_at", "progress_at", "revoking", "held")

    def __init__(self, worker: str, rids: list[int], progress_at: float = 0.0) -> None:
        self.worker = worker
        self.rids = rids
        self.open = len(rids)  # jobs without their terminal reply yet
        self.started_at: float | None = None  # when it got a run slot; None while held behind running batches
        self.progress_at = progress_at  # its oldest job's arrival, then its last stream chunk (hung detection)
        self.revoking = False  # a REVOKE was sent for it
        self.held = 0  # of its jobs, how many count in the scheduler's ``waiting`` (not started, not given back)


@dataclass(eq=False)
class WorkerSlots:
    name: str
    run_slots: int
    prefetch: int = 0
    batches: deque[Batch] = field(default_factory=deque)  # in dispatch order; the first run_slots run
    busy_since: float = 0.0
    last_beat: float = 0.0

    @property
    def capacity(self) -> int:
        return self.run_slots + self.prefetch

    @property
    def busy(self) -> int:
        return len(self.batches)

    @property
    def free(self) -> int:
        return self.capacity - len(self.batches)

    @property
    def can_start(self) -> bool:
        """It has a free run slot: a batch sent now starts at once."""
        return len(self.batches) < self.run_slots

    def running(self) -> Iterator[Batch]:
        return itertools.islice(self.batches, 0, self.run_slots)

    def held(self) -> Iterator[Batch]:
        return itertools.islice(self.batches, self.run_slots, None)


class Scheduler:
    """Queue, per-worker slots, batching window, revocation, cancel and hung decisions.

    Args:
        max_batch_size: most jobs put in one batch.
        batch_timeout: seconds the oldest queued job may wait for a batch to fill.
        max_queue_size: most jobs accepted and not started (queued or held); ``submit`` refuses beyond.
        timeout: the request timeout (None: none); with ``hung_grace``, what makes a worker overdue.
        hung_grace: seconds a request may still run after its timeout before its worker counts as
            hung (None: never).
        heartbeat_timeout: seconds a busy worker may go without a heartbeat (None: never checked).
        prefetch_below: use prefetch slots only while the mean run time per batch (``run_time``) is
            below this many seconds (None: always; before the first batch finished: never).
    """

    def __init__(
        self,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
        max_queue_size: int = 1024,
        *,
        timeout: float | None = None,
        hung_grace: float | None = None,
        heartbeat_timeout: float | None = None,
        prefetch_below: float | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.max_queue_size = max_queue_size
        self.timeout = timeout
        self.hung_grace = hung_grace
        self.heartbeat_timeout = heartbeat_timeout
        self.prefetch_below = prefetch_below
        # Mean seconds from a batch's start (a run slot: its dispatch, or the reply that freed the slot it
        # waited for) to its last reply, weighted toward recent batches. With replies coming back
        # together, a batch started by the previous reply can finish at once; the mean still comes out
        # as the time per batch. It includes one round trip when nothing is prefetched.
        self.run_time: float | None = None
        self._queue: deque[Job] = deque()  # arrival order; dropped jobs are skipped lazily
        self._queued = 0  # live jobs in _queue
        self._held = 0  # jobs in held (prefetched, not started) batches
        self._dispatched: dict[int, Job] = {}
        self._workers: dict[str, WorkerSlots] = {}
        self._order: list[WorkerSlots] = []  # the workers, for round-robin picking
        self._rr = 0

    # -- workers --------------------------------------------------------------------------------------
    def add_worker(self, name: str, run_slots: int, *, prefetch: int = 0, now: float = 0.0) -> None:
        """Register a worker that runs ``run_slots`` batches at once and may hold ``prefetch`` more.

        A worker with prefetch runs what it holds in dispatch order; a prefetch slot takes only a
        full batch (a partial one keeps filling here until a run slot frees).
        """
        self._workers[name] = WorkerSlots(name, max(1, run_slots), max(0, prefetch), last_beat=now)
        self._order = list(self._workers.values())

    def remove_worker(self, name: str) -> list[Job]:
        """Forget a worker. Its held batches go back to the front of the queue, without penalty;
        the jobs it was running are returned (dropped): the caller retries or fails each."""
        slots = self._workers.pop(name, None)
        if slots is None:
            return []
        self._order = list(self._workers.values())
        running: list[Job] = []
        back: list[Job] = []
        for i, batch in enumerate(slots.batches):
            held = i >= slots.run_slots
            self._held -= batch.held
            batch.held = 0
            for rid in batch.rids:
                job = self._dispatched.pop(rid, None)
                if job is None:
                    continue  # already answered
                job.batch = None
                if held:
                    back.append(job)
                else:
                    job.state = DROPPED
                    running.append(job)
        self._requeue_front(back)
        return running

    def retry(self, jobs: list[Job]) -> None:
        """Queue jobs again, at the front, after their worker died running them (marks them ``retried``)."""
        for job in jobs:
            job.retried = True
        self._requeue_front(jobs)

    # -- requests -------------------------------------------------------------------------------------
    def submit(self, job: Job) -> bool:
        """Queue a job; False when ``max_queue_size`` requests already wait (the caller answers 503)."""
        if self._queued + self._held >= self.max_queue_size:
            return False
        job.state = QUEUED
        self._queue.append(job)
        self._queued += 1
        return True

    def cancel(self, rid: int, job: Job | None = None) -> str | None:
        """Stop caring about a job. Returns the worker to send CANCEL to, or None if none holds it."""
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
            job.cancelled = True  # if it comes back unstarted (REVOKED, its worker died), it is dropped
            return job.batch.worker
        return None

    def complete(self, rid: int, worker: str, now: float = 0.0) -> bool:
        """A terminal reply arrived for ``rid`` from ``worker``; False if that worker does not hold it."""
        job = self._detach(rid, worker, now, ran=True)
        if job is None:
            return False
        job.state = DROPPED
        return True

    def revoked(self, rid: int, worker: str, now: float = 0.0) -> bool:
        """``worker`` gave ``rid`` back unstarted (REVOKED): it returns to the front of the queue."""
        job = self._detach(rid, worker, now, ran=False)
        if job is None:
            return False
        self._requeue_front([job])
        return True

    def progress(self, rid: int, worker: str, now: float) -> bool:
        """A stream chunk for ``rid`` arrived from ``worker``; False if that worker does not hold it."""
        job = self._dispatched.get(rid)
        if job is None or job.batch is None or job.batch.worker != worker:
            return False
        job.batch.progress_at = now
        return True

    def beat(self, worker: str, now: float) -> None:
        """A heartbeat from ``worker``: it is alive."""
        slots = self._workers.get(worker)
        if slots is not None:
            slots.last_beat = now

    def holds(self, rid: int, worker: str) -> bool:
        job = self._dispatched.get(rid)
        return job is not None and job.batch is not None and job.batch.worker == worker

    # -- decisions ------------------------------------------------------------------------------------
    def schedule(self, now: float) -> tuple[list[tuple[str, list[Job]]], float | None]:
        """Assign queued jobs to workers with room. Returns ``(dispatches, wake_at)``.

        Run slots fill first (a batch that starts now), then prefetch slots (full batches only).
        ``wake_at`` is when a partly filled batch's window closes (call again then), or None.
        """
        dispatches: list[tuple[str, list[Job]]] = []
        if not self._queued:
            return dispatches, None
        prefetching = self._prefetching()
        dispatched = self._dispatched
        size = self.max_batch_size
        while self._queued:
            slots = self._pick(prefetching)
            if slots is None:
                return dispatches, None
            head = self._oldest()
            take = 1 if head.retried else min(self._queued, size)  # a retried job runs alone
            starts = len(slots.batches) < slots.run_slots
            if take < size and not head.retried:  # a partial batch
                if not starts:
                    return dispatches, None  # prefetch takes full batches; a run slot freeing reschedules
                if self.batch_timeout > 0:
                    closes = head.enqueued_at + self.batch_timeout
                    if now < closes:
                        return dispatches, closes
            jobs = self._pop(take)
            batch = Batch(slots.name, [j.rid for j in jobs], jobs[0].enqueued_at)
            for job in jobs:
                job.state = DISPATCHED
                job.batch = batch
                dispatched[job.rid] = job
            if not slots.batches:
                slots.busy_since = now
            if starts:
                batch.started_at = now
            else:
                batch.held = len(jobs)
                self._held += len(jobs)
            slots.batches.append(batch)
            dispatches.append((slots.name, jobs))
        return dispatches, None

    def revocations(self) -> list[tuple[str, list[int]]]:
        """Held batches to take back because a worker with a free run slot has nothing it can start.

        Call after ``schedule``. Each returned batch is marked ``revoking``; send REVOKE for its ids.
        """
        if not self._held:
            return []
        # Called after ``schedule``: a run slot still free means nothing queued could start there now
        # (the queue is empty, or its partial batch is still filling), so a held batch should.
        free = self.free_run_slots
        if free <= 0:
            return []
        # Free run slots not already promised a batch that is on its way back.
        free -= sum(b.revoking for s in self._order for b in s.held())
        out: list[tuple[str, list[int]]] = []
        while free > 0:
            victim: Batch | None = None
            for slots in self._workers.values():
                for batch in reversed(list(slots.held())):  # the newest held batch goes first
                    if not batch.revoking:
                        victim = batch
                        break
                if victim is not None:
                    break
            if victim is None:
                break
            victim.revoking = True
            out.append((victim.worker, [r for r in victim.rids if r in self._dispatched]))
            free -= 1
        return out

    def overdue(self, now: float) -> tuple[list[tuple[str, str]], float | None]:
        """Workers that look hung, as ``(worker, why)``, and when to check again (None: nothing to watch).

        A worker is hung when a batch it runs has gone ``hung_grace`` past its timeout (from its
        oldest job's arrival, or its last stream chunk) and also ran at least ``hung_grace`` itself,
        or when it is busy and sent no heartbeat for ``heartbeat_timeout``.
        """
        hung: list[tuple[str, str]] = []
        next_at: float | None = None
        for slots in self._workers.values():
            if not slots.batches:
                continue
            due: float | None = None
            why = ""
            if self.heartbeat_timeout is not None:
                due = max(slots.last_beat, slots.busy_since) + self.heartbeat_timeout
                why = f"no heartbeat for {self.heartbeat_timeout:g}s while busy"
            if self.timeout is not None and self.hung_grace is not None:
                for batch in slots.running():
                    if batch.started_at is None:
                        continue
                    at = max(batch.progress_at + self.timeout, batch.started_at) + self.hung_grace
                    if due is None or at < due:
                        due = at
                        why = f"a request still running {self.hung_grace:g}s after its {self.timeout:g}s timeout"
            if due is None:
                continue
            if now >= due:
                hung.append((slots.name, why))
            elif next_at is None or due < next_at:
                next_at = due
        return hung, next_at

    # -- views ----------------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Jobs in the app's queue."""
        return self._queued

    @property
    def waiting(self) -> int:
        """Jobs accepted and not started: queued, or held by a worker behind its running batches."""
        return self._queued + self._held

    @property
    def in_flight(self) -> int:
        return len(self._dispatched)

    @property
    def workers(self) -> dict[str, WorkerSlots]:
        return self._workers

    @property
    def free_run_slots(self) -> int:
        """Run slots no batch occupies: capacity that can start a request now."""
        return sum(s.run_slots - min(s.busy, s.run_slots) for s in self._workers.values())

    def __repr__(self) -> str:
        load = ", ".join(f"{w.name}={w.busy}/{w.run_slots}+{w.prefetch}" for w in self._workers.values())
        return f"<Scheduler queued={self._queued} held={self._held} in_flight={len(self._dispatched)} workers=[{load}]>"

    # -- internals ------------------------------------------------------------------------------------
    def _pick(self, prefetching: bool) -> WorkerSlots | None:
        """A worker with a free run slot, else (when ``prefetching``) one with a free prefetch slot: the
        one with the most room; ties go round-robin so load spreads evenly."""
        order = self._order
        n = len(order)
        if n == 1:
            w = order[0]
            busy = len(w.batches)
            return w if busy < w.run_slots or (prefetching and busy < w.run_slots + w.prefetch) else None
        best: WorkerSlots | None = None
        best_room = best_at = 0
        start = self._rr
        for k in range(n):
            i = (start + k) % n
            w = order[i]
            room = w.run_slots - len(w.batches)
            if room > best_room:
                best, best_room, best_at = w, room, i
        if best is None and prefetching:
            for k in range(n):
                i = (start + k) % n
                w = order[i]
                room = w.run_slots + w.prefetch - len(w.batches)
                if room > best_room:
                    best, best_room, best_at = w, room, i
        if best is not None:
            self._rr = (best_at + 1) % n
        return best

    def _prefetching(self) -> bool:
        if self.prefetch_below is None:
            return True
        return self.run_time is not None and self.run_time < self.prefetch_below

    def _detach(self, rid: int, worker: str, now: float, *, ran: bool) -> Job | None:
        """Take ``rid`` off ``worker`` (its reply came, or it came back unstarted); None if not held there."""
        job = self._dispatched.get(rid)
        if job is None or job.batch is None or job.batch.worker != worker:
            return None
        del self._dispatched[rid]
        batch = job.batch
        job.batch = None
        if batch.held:  # it still counted as waiting (given back, or answered before we saw it start)
            batch.held -= 1
            self._held -= 1
        if not ran:
            batch.started_at = None  # a batch given back never ran: no run time to learn from it
        batch.open -= 1
        if batch.open == 0:
            self._release(batch, now)
        return job

    def _release(self, batch: Batch, now: float) -> None:
        """Every job of ``batch`` has its reply (or came back): free its slot."""
        slots = self._workers.get(batch.worker)
        if slots is None:
            return

        if batch.started_at is not None:
            took = now - batch.started_at
            mean = self.run_time
            self.run_time = took if mean is None else mean + RUN_TIME_WEIGHT * (took - mean)
        index = 0 if slots.batches[0] is batch else slots.batches.index(batch)
        del slots.batches[index]
        self._held -= batch.held
        batch.held = 0
        if index < slots.run_slots and len(slots.batches) >= slots.run_slots:
            promoted = slots.batches[slots.run_slots - 1]  # a held batch moves up into the run slot
            promoted.started_at = now
            self._held -= promoted.held
            promoted.held = 0
        if not slots.batches:
            slots.busy_since = 0.0

    def _requeue_front(self, jobs: list[Job]) -> None:
        """Put jobs back at the head of the queue, keeping arrival order among them; a cancelled one
        is dropped instead (nobody waits for its answer)."""
        for job in sorted(jobs, key=lambda j: j.rid, reverse=True):
            if job.cancelled:
                job.state = DROPPED
                job.payload = b""
                continue
            job.state = QUEUED
            self._queue.appendleft(job)
            self._queued += 1

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
