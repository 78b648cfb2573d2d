"""The scheduler as a pure state machine, driven with a fake clock (plain numbers)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litserve.core.scheduler import DISPATCHED, DROPPED, QUEUED, Job, Scheduler


class Harness:
    """A scheduler plus the bookkeeping a test needs: jobs by id and a fake clock."""

    def __init__(self, **kw) -> None:
        self.s = Scheduler(**kw)
        self.now = 0.0
        self.jobs: dict[int, Job] = {}
        self._next = 0

    def submit(self, n: int = 1) -> list[int]:
        rids = []
        for _ in range(n):
            self._next += 1
            job = Job(self._next, b"payload-%d" % self._next, b"tag", self.now)
            assert self.s.submit(job)
            self.jobs[job.rid] = job
            rids.append(job.rid)
        return rids

    def schedule(self):
        dispatches, wake = self.s.schedule(self.now)
        return [(w, [j.rid for j in jobs]) for w, jobs in dispatches], wake

    def cancel(self, rid: int):
        return self.s.cancel(rid, self.jobs[rid])


def test_nothing_is_dispatched_without_a_worker_then_everything_in_order():
    h = Harness()
    h.submit(3)
    assert h.schedule() == ([], None)
    assert h.s.queued == 3 and h.s.in_flight == 0
    h.s.add_worker("a", 3)
    dispatches, wake = h.schedule()
    assert dispatches == [("a", [1]), ("a", [2]), ("a", [3])]
    assert wake is None
    assert h.s.queued == 0 and h.s.in_flight == 3
    assert all(h.jobs[r].state == DISPATCHED for r in (1, 2, 3))


def test_capacity_bounds_what_a_worker_holds():
    h = Harness()
    h.s.add_worker("a", 2)
    h.submit(5)
    assert h.schedule()[0] == [("a", [1]), ("a", [2])]
    assert h.s.workers["a"].busy == 2 and h.s.queued == 3
    assert h.schedule()[0] == []  # still full
    assert h.s.complete(1, "a")
    assert h.schedule()[0] == [("a", [3])]
    assert h.s.complete(3, "a") and h.s.complete(2, "a")
    assert h.schedule()[0] == [("a", [4]), ("a", [5])]


def test_capacity_below_one_counts_as_one():
    h = Harness()
    h.s.add_worker("a", 0)
    h.submit(2)
    assert h.schedule()[0] == [("a", [1])]


def test_complete_from_the_wrong_worker_or_twice_is_refused():
    h = Harness()
    h.s.add_worker("a", 1)
    h.s.add_worker("b", 1)
    h.submit(1)
    [(worker, [rid])] = h.schedule()[0]
    other = "b" if worker == "a" else "a"
    assert not h.s.holds(rid, other) and h.s.holds(rid, worker)
    assert not h.s.complete(rid, other)
    assert h.s.in_flight == 1
    assert h.s.complete(rid, worker)
    assert not h.s.complete(rid, worker)
    assert not h.s.complete(999, worker)
    assert h.s.workers[worker].busy == 0


def test_batching_window_waits_for_the_oldest_job_then_sends_a_partial_batch():
    h = Harness(max_batch_size=4, batch_timeout=0.1)
    h.s.add_worker("a", 1)
    h.submit(1)
    assert h.schedule() == ([], pytest.approx(0.1))
    h.now = 0.05
    h.submit(2)
    assert h.schedule() == ([], pytest.approx(0.1))  # the window runs from the oldest job
    h.now = 0.0999
    assert h.schedule()[0] == []
    h.now = 0.1
    assert h.schedule() == ([("a", [1, 2, 3])], None)
    assert h.s.queued == 0


def test_a_full_batch_goes_at_once_and_the_rest_waits_for_its_own_window():
    h = Harness(max_batch_size=2, batch_timeout=1.0)
    h.s.add_worker("a", 3)
    h.submit(2)
    h.now = 0.5
    h.submit(3)
    dispatches, wake = h.schedule()
    assert dispatches == [("a", [1, 2]), ("a", [3, 4])]
    assert wake == pytest.approx(1.5)  # job 5 arrived at 0.5
    h.now = 1.5
    assert h.schedule() == ([("a", [5])], None)


def test_zero_batch_timeout_sends_what_is_there():
    h = Harness(max_batch_size=8, batch_timeout=0.0)
    h.s.add_worker("a", 1)
    h.submit(3)
    assert h.schedule() == ([("a", [1, 2, 3])], None)


def test_a_batch_frees_its_slot_only_when_every_job_in_it_completed():
    h = Harness(max_batch_size=3)
    h.s.add_worker("a", 1)
    h.submit(3)
    assert h.schedule()[0] == [("a", [1, 2, 3])]
    h.submit(1)
    assert h.s.complete(1, "a") and h.s.complete(3, "a")
    assert h.schedule()[0] == []
    assert h.s.complete(2, "a")
    assert h.schedule()[0] == [("a", [4])]


def test_no_worker_no_wake_even_with_a_batch_window():
    h = Harness(max_batch_size=4, batch_timeout=0.1)
    h.submit(1)
    assert h.schedule() == ([], None)  # a worker's arrival triggers the next schedule


def test_cancel_of_a_queued_job_drops_it_before_any_worker_sees_it():
    h = Harness()
    h.submit(3)
    assert h.cancel(2) is None
    assert h.jobs[2].state == DROPPED and h.jobs[2].payload == b""
    assert h.s.queued == 2
    h.s.add_worker("a", 5)
    assert h.schedule()[0] == [("a", [1]), ("a", [3])]


def test_cancel_of_a_dispatched_job_names_its_worker_and_keeps_the_slot_until_its_reply():
    h = Harness()
    h.s.add_worker("a", 1)
    h.submit(2)
    assert h.schedule()[0] == [("a", [1])]
    assert h.cancel(1) == "a"
    assert h.s.cancel(1) == "a"  # found by id too
    assert h.s.in_flight == 1 and h.s.workers["a"].busy == 1
    assert h.schedule()[0] == []  # the worker is still busy with it
    assert h.s.complete(1, "a")  # the worker's terminal reply (499) frees the slot
    assert h.schedule()[0] == [("a", [2])]


def test_cancel_after_completion_or_twice_is_a_no_op():
    h = Harness()
    h.s.add_worker("a", 1)
    h.submit(2)
    h.schedule()
    assert h.s.complete(1, "a")
    assert h.cancel(1) is None
    assert h.cancel(2) is None
    assert h.cancel(2) is None
    assert h.s.queued == 0
    assert h.s.cancel(12345) is None


def test_remove_worker_returns_what_it_ran_and_leaves_the_rest():
    h = Harness(max_batch_size=2)
    h.s.add_worker("a", 1)
    h.s.add_worker("b", 1)
    h.submit(6)
    dispatches, _ = h.schedule()
    held = dict(dispatches)
    assert sorted(held) == ["a", "b"] and h.s.queued == 2
    lost = h.s.remove_worker("a")
    assert sorted(lost) == sorted(held["a"])
    assert all(h.jobs[r].state == DROPPED for r in lost)
    assert all(not h.s.holds(r, "a") and not h.s.complete(r, "a") for r in lost)
    assert h.s.in_flight == 2 and h.s.queued == 2
    assert "a" not in h.s.workers
    assert h.s.remove_worker("a") == []
    assert h.schedule()[0] == []  # b is busy; the queued jobs wait for it, not for the dead worker
    for r in held["b"]:
        assert h.s.complete(r, "b")
    assert h.schedule()[0] == [("b", [5, 6])]


def test_queue_full_refuses_and_cancelling_makes_room():
    h = Harness(max_queue_size=3)
    h.submit(3)
    assert not h.s.submit(Job(100, b"", b"", 0.0))
    assert h.s.queued == 3
    assert h.cancel(2) is None
    assert h.s.submit(Job(101, b"", b"", 0.0))
    assert not h.s.submit(Job(102, b"", b"", 0.0))


def test_dispatched_jobs_do_not_count_against_the_queue():
    h = Harness(max_queue_size=2)
    h.s.add_worker("a", 2)
    h.submit(2)
    h.schedule()
    h.submit(2)
    assert h.s.in_flight == 2 and h.s.queued == 2
    assert not h.s.submit(Job(100, b"", b"", 0.0))


def test_equal_workers_take_turns():
    h = Harness()
    for name in "abc":
        h.s.add_worker(name, 1)
    order = []
    for _ in range(7):
        [rid] = h.submit(1)
        [(worker, [got])] = h.schedule()[0]
        assert got == rid
        order.append(worker)
        assert h.s.complete(rid, worker)
    assert order == ["a", "b", "c", "a", "b", "c", "a"]


def test_least_loaded_worker_is_preferred():
    h = Harness()
    h.s.add_worker("a", 4)
    h.s.add_worker("b", 4)
    h.submit(8)
    dispatches, _ = h.schedule()
    workers = [w for w, _ in dispatches]
    assert workers.count("a") == 4 and workers.count("b") == 4
    assert workers[:4] in (["a", "b", "a", "b"], ["b", "a", "b", "a"])  # spread, not filled one by one
    for rid in dispatches[0][1] + dispatches[2][1]:  # free two slots on the same worker
        assert h.s.complete(rid, dispatches[0][0])
    h.submit(2)
    assert [w for w, _ in h.schedule()[0]] == [dispatches[0][0]] * 2


def test_bigger_worker_takes_more():
    h = Harness()
    h.s.add_worker("small", 1)
    h.s.add_worker("big", 3)
    h.submit(4)
    workers = [w for w, _ in h.schedule()[0]]
    assert sorted(workers) == ["big", "big", "big", "small"]


def _residue(s: Scheduler) -> int:
    return len(s._queue)


def test_lazy_deletion_leaves_no_residue_once_the_queue_drains():
    h = Harness()
    rids = h.submit(50)
    for rid in rids[1::2]:
        h.cancel(rid)
    h.s.add_worker("a", 100)
    dispatches, _ = h.schedule()
    assert [r for _, batch in dispatches for r in batch] == rids[0::2]
    assert h.s.queued == 0 and _residue(h.s) == 0


def test_cancelling_everything_in_any_order_leaves_no_residue():
    h = Harness()
    rids = h.submit(20)
    random.Random(4).shuffle(rids)
    for rid in rids:
        h.cancel(rid)
    assert h.s.queued == 0 and _residue(h.s) == 0
    h.s.add_worker("a", 1)
    assert h.schedule() == ([], None)


def test_cancelled_jobs_behind_a_stuck_one_do_not_pile_up():
    """A request waiting at the head (every worker busy, no timeout) while thousands of others arrive
    and leave: the dropped ones must not accumulate in the queue."""
    h = Harness(max_queue_size=16)
    h.submit(1)  # stuck at the head: there is no worker
    for _ in range(5000):
        [rid] = h.submit(1)
        h.cancel(rid)
    assert h.s.queued == 1
    assert _residue(h.s) <= 64


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from("sqcdwrt"), st.integers(0, 10**6)), max_size=120))
def test_invariants_under_random_events(ops):
    h = Harness(max_batch_size=3, batch_timeout=0.05, max_queue_size=10)
    workers: list[str] = []
    live: dict[int, str] = {}  # dispatched rid -> worker, as the app tracks them
    n_workers = 0
    for op, x in ops:
        if op == "s":
            h._next += 1
            job = Job(h._next, b"p", b"", h.now)
            if h.s.submit(job):
                h.jobs[job.rid] = job
        elif op == "q" and h.jobs:  # cancel something, whatever its state
            rid = list(h.jobs)[x % len(h.jobs)]
            h.cancel(rid)
        elif op == "d" and live:  # a worker replies
            rid = list(live)[x % len(live)]
            assert h.s.complete(rid, live.pop(rid))
        elif op == "w":
            n_workers += 1
            name = f"w{n_workers}"
            h.s.add_worker(name, 1 + x % 3)
            workers.append(name)
        elif op == "r" and workers:
            name = workers.pop(x % len(workers))
            lost = set(h.s.remove_worker(name))
            assert lost == {r for r, w in live.items() if w == name}
            for r in lost:
                del live[r]
        elif op == "t":
            h.now += (x % 100) / 1000
        dispatches, wake = h.s.schedule(h.now)
        for worker, jobs in dispatches:
            assert 1 <= len(jobs) <= 3
            for job in jobs:
                assert job.state == DISPATCHED and job.rid not in live
                live[job.rid] = worker
        if wake is not None:
            assert wake > h.now
        # invariants
        queued = [j for j in h.s._queue if j.state == QUEUED]
        assert h.s.queued == len(queued) == len({j.rid for j in queued})
        assert h.s.queued <= 10
        if h.s.queued == 0:
            assert _residue(h.s) == 0
        assert h.s.in_flight == len(live)
        for slots in h.s.workers.values():
            assert 0 <= slots.busy <= slots.capacity
        if h.s.queued and wake is None and h.s.workers:
            assert all(s.free == 0 for s in h.s.workers.values())
