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
    lost = [j.rid for j in h.s.remove_worker("a")]
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


# -- dispatch by free run slots, revocable prefetch, the queue bound ----------------------------------


def test_a_sync_worker_is_sent_only_what_it_can_start_and_the_rest_waits_for_whoever_frees_first():
    """Head-of-line blocking, as a policy: one long request on "a" never holds the short ones."""
    h = Harness()
    h.s.add_worker("a", 1)
    h.s.add_worker("b", 1)
    h.submit(4)  # 1 is long, 2..4 short
    assert sorted(h.schedule()[0]) == [("a", [1]), ("b", [2])]
    assert h.s.queued == 2 and h.s.waiting == 2
    for rid in (3, 4):  # b frees again and again while a is still on request 1
        assert h.s.complete(rid - 1, "b")
        assert h.schedule()[0] == [("b", [rid])]
    assert h.s.holds(1, "a") and h.s.queued == 0


def test_prefetched_jobs_count_against_the_queue_bound():
    h = Harness(max_queue_size=2)
    h.s.add_worker("a", 1, prefetch=1)
    h.submit(2)
    assert h.schedule()[0] == [("a", [1]), ("a", [2])]  # 1 runs, 2 is held behind it
    assert h.s.queued == 0 and h.s.waiting == 1
    h.submit(1)
    assert h.s.waiting == 2
    assert not h.s.submit(Job(100, b"", b"", 0.0))  # 2 and 3 have not started: the bound is reached
    assert h.s.complete(1, "a")  # 2 starts
    assert h.s.waiting == 1
    assert h.s.submit(Job(101, b"", b"", 0.0))


def test_a_held_job_is_revoked_for_an_idle_worker_and_starts_there():
    h = Harness()
    h.s.add_worker("a", 1, prefetch=1)
    h.submit(2)
    assert h.schedule()[0] == [("a", [1]), ("a", [2])]
    assert h.s.revocations() == []  # nobody idle
    h.s.add_worker("b", 1)
    assert h.schedule()[0] == []
    assert h.s.revocations() == [("a", [2])]
    assert h.s.revocations() == []  # already on its way back
    assert h.s.revoked(2, "a")
    assert not h.s.revoked(2, "a")
    assert h.jobs[2].state == QUEUED
    assert h.schedule()[0] == [("b", [2])]
    assert h.s.waiting == 0


def _revoking_held_job() -> Harness:
    """Worker a runs job 1 and holds job 2; idle worker b joins, so a REVOKE for 2 is on its way to a."""
    h = Harness()
    h.s.add_worker("a", 1, prefetch=1)
    h.submit(2)
    h.schedule()
    h.s.add_worker("b", 1)
    assert h.s.revocations() == [("a", [2])]
    return h


def test_a_revoke_that_arrives_after_the_job_started_changes_nothing():
    h = _revoking_held_job()
    assert h.s.complete(1, "a")  # the worker finished 1 and started 2 before it read the REVOKE
    assert h.s.waiting == 0 and h.s.holds(2, "a")
    assert h.s.complete(2, "a")
    assert h.s.workers["a"].busy == 0 and h.s.in_flight == 0


def test_prefetch_is_used_only_while_the_work_is_fast():
    h = Harness(prefetch_below=0.002)
    h.s.add_worker("a", 1, prefetch=1)
    h.submit(4)
    assert h.schedule()[0] == [("a", [1])]  # nothing finished yet, run time unknown: no prefetch
    h.now = 0.0001
    assert h.s.complete(1, "a", now=h.now)  # 100 µs from its start to its reply: fast
    assert h.s.run_time == pytest.approx(0.0001)
    assert h.schedule()[0] == [("a", [2]), ("a", [3])]  # 3 is held behind 2
    assert h.s.waiting == 2  # 3 held, 4 queued
    h.now = 0.2001
    assert h.s.complete(2, "a", now=h.now)  # 200 ms: the mean jumps above 2 ms
    assert h.s.run_time > 0.002
    h.submit(1)
    assert h.schedule()[0] == []  # 3 runs (promoted); 4 and 5 wait in the shared queue, not behind it
    assert h.s.queued == 2


def test_run_time_is_the_mean_time_per_batch_when_replies_come_back_together():
    h = Harness(prefetch_below=0.002)
    h.s.add_worker("a", 1, prefetch=3)
    h.submit(1)
    h.schedule()
    h.now = 0.001
    h.s.complete(1, "a", now=h.now)
    h.submit(4)
    assert [r for _, rids in h.schedule()[0] for r in rids] == [2, 3, 4, 5]
    # The worker ran 2..5 back to back (1 ms each) and its replies arrive in one message at 4 ms:
    # the first counts the 4 ms since its start, the promoted ones 0 each.
    h.now = 0.005
    for rid in (2, 3, 4, 5):
        h.s.complete(rid, "a", now=h.now)
    assert 0.0005 < h.s.run_time < 0.002


def test_prefetch_takes_only_full_batches():
    h = Harness(max_batch_size=2)
    h.s.add_worker("a", 1, prefetch=1)
    h.submit(3)
    assert h.schedule()[0] == [("a", [1, 2])]  # job 3 alone is a partial batch: it waits here
    h.submit(1)
    assert h.schedule()[0] == [("a", [3, 4])]


def test_a_dead_workers_held_jobs_go_back_to_the_front_without_penalty():
    h = Harness()
    h.s.add_worker("a", 1, prefetch=1)
    h.submit(3)
    assert h.schedule()[0] == [("a", [1]), ("a", [2])]
    running = h.s.remove_worker("a")
    assert [j.rid for j in running] == [1]
    assert h.jobs[2].state == QUEUED and not h.jobs[2].retried
    assert h.s.waiting == 2 and h.s.queued == 2
    h.s.retry(running)
    assert h.jobs[1].retried
    h.s.add_worker("b", 1, prefetch=1)
    assert h.schedule()[0] == [("b", [1]), ("b", [2])]


def test_a_retried_job_runs_alone_so_its_batch_neighbours_are_not_lost_with_it_again():
    h = Harness(max_batch_size=4)
    h.s.add_worker("a", 1)
    h.submit(3)
    assert h.schedule()[0] == [("a", [1, 2, 3])]
    h.s.retry(h.s.remove_worker("a"))
    h.s.add_worker("b", 1)
    assert h.schedule()[0] == [("b", [1])]
    assert h.s.complete(1, "b")
    assert h.schedule()[0] == [("b", [2])]


def test_hung_by_timeout_counts_from_the_batch_start_and_a_stream_chunk_resets_it():
    h = Harness(timeout=2.0, hung_grace=1.0)
    h.s.add_worker("a", 1, prefetch=1)
    h.submit(2)
    h.schedule()
    assert h.s.overdue(0.0) == ([], 3.0)
    assert h.s.overdue(2.9)[0] == []
    assert h.s.overdue(3.0)[0] == [("a", "a request still running 1s after its 2s timeout")]
    assert h.s.progress(1, "a", 2.5)  # a chunk at 2.5: the next is due by 4.5
    assert h.s.overdue(3.0) == ([], 5.5)
    h.now = 10.0
    assert h.s.complete(1, "a", now=10.0)  # job 2 starts only now, long after its own timeout
    assert h.s.overdue(10.5) == ([], 11.0)  # it gets hung_grace from its start, not zero


def test_hung_by_heartbeat_only_while_busy():
    h = Harness(heartbeat_timeout=5.0)
    h.s.add_worker("a", 1, now=0.0)
    assert h.s.overdue(100.0) == ([], None)  # idle: nothing to watch
    h.now = 100.0
    h.submit(1)
    h.schedule()
    assert h.s.overdue(104.0) == ([], 105.0)
    h.s.beat("a", 104.0)
    assert h.s.overdue(108.0) == ([], 109.0)
    assert h.s.overdue(109.0)[0] == [("a", "no heartbeat for 5s while busy")]


# -- the invariants, under random events ------------------------------------------------------------


def _check_invariants(h: Harness, live: dict[int, str], wake: float | None, bound: int) -> None:
    s = h.s
    queued = [j for j in s._queue if j.state == QUEUED]
    assert s.queued == len(queued) == len({j.rid for j in queued})
    if s.queued == 0:
        assert _residue(s) == 0
    assert s.in_flight == len(live)
    # 2. no request is on two workers, nor both queued and on a worker
    seen: set[int] = set()
    held = 0
    for slots in s.workers.values():
        assert 0 <= slots.busy <= slots.capacity
        for i, batch in enumerate(slots.batches):
            open_rids = [r for r in batch.rids if live.get(r) == slots.name]
            assert not seen & set(open_rids)
            seen.update(open_rids)
            if i >= slots.run_slots:
                held += batch.held
                assert batch.held <= len(open_rids)
    assert seen == set(live) and not seen & {j.rid for j in queued}
    # 3. every accepted job that has not started counts against the bound
    assert s.waiting == s.queued + held
    retried = sum(1 for j in queued if j.retried)
    assert s.waiting <= bound + retried
    # 1. while a request waits, no worker that could run it is idle
    # (a held job waits too: each free run slot has a held batch on its way back to it, or none is left)
    if any(w.can_start for w in s.workers.values()):
        assert s.queued == 0 or wake is not None
        held_batches = [b for slots in s.workers.values() for b in slots.held()]
        coming_back = sum(b.revoking for b in held_batches)
        assert coming_back == len(held_batches) or coming_back >= s.free_run_slots


@settings(max_examples=300, deadline=None)
@given(
    batch=st.sampled_from([1, 3]),
    below=st.sampled_from([None, 0.02]),
    ops=st.lists(st.tuples(st.sampled_from("sssqcdwrtvb"), st.integers(0, 10**6)), max_size=150),
)
def test_invariants_under_random_events(batch, below, ops):
    h = Harness(max_batch_size=batch, batch_timeout=0.05, max_queue_size=10, prefetch_below=below)
    workers: list[str] = []
    live: dict[int, str] = {}  # dispatched rid -> worker, as the app tracks them
    revoking: dict[int, str] = {}  # REVOKE sent, no answer yet
    started: dict[int, int] = {}  # rid -> times it was dispatched to a run slot... or held
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
        elif op == "d" and live:  # a worker replies (a held job it reached, or a running one)
            rid = list(live)[x % len(live)]
            assert h.s.complete(rid, live.pop(rid), now=h.now)
            revoking.pop(rid, None)
        elif op == "v" and revoking:  # a worker gives back a job it had not started
            rid = list(revoking)[x % len(revoking)]
            worker = revoking.pop(rid)
            if live.get(rid) == worker:
                assert h.s.revoked(rid, worker, now=h.now)
                del live[rid]
        elif op == "w":
            n_workers += 1
            name = f"w{n_workers}"
            if x % 2:
                h.s.add_worker(name, 1, prefetch=1)  # a sync worker with a prefetch slot
            else:
                h.s.add_worker(name, 1 + x % 3)  # an async worker: several run slots
            workers.append(name)
        elif op == "r" and workers:
            name = workers.pop(x % len(workers))
            lost = h.s.remove_worker(name)
            mine = {r for r, w in live.items() if w == name}
            assert {j.rid for j in lost} <= mine
            for r in mine:
                del live[r]
                revoking.pop(r, None)
            h.s.retry([job for job in lost if not job.retried and x % 3])
        elif op == "t":
            h.now += (x % 100) / 1000
        elif op == "b" and workers:
            h.s.beat(workers[x % len(workers)], h.now)
        dispatches, wake = h.s.schedule(h.now)
        for worker, jobs in dispatches:
            assert 1 <= len(jobs) <= batch
            for job in jobs:
                assert job.state == DISPATCHED and job.rid not in live
                live[job.rid] = worker
                started[job.rid] = started.get(job.rid, 0) + 1
        for worker, rids in h.s.revocations():
            for rid in rids:
                assert live[rid] == worker
                revoking[rid] = worker
        if wake is not None:
            assert wake > h.now
        _check_invariants(h, live, wake, 10)
        hung, next_at = h.s.overdue(h.now)
        assert next_at is None or next_at > h.now


def test_a_held_job_cancelled_while_its_revoke_is_on_the_way_is_not_queued_again():
    # The client left while the job was held and a REVOKE for it was in flight: the worker gives it
    # back (REVOKED) without running it. Queued again, it would run for nobody, at the head of the
    # queue, and count against max_queue_size meanwhile.
    h = _revoking_held_job()
    assert h.cancel(2) == "a"  # the app sends CANCEL to a; the REVOKE got there first
    assert h.s.revoked(2, "a")
    assert h.jobs[2].state == DROPPED
    assert h.s.waiting == 0 and h.s.queued == 0
    assert h.schedule()[0] == []


def test_a_dead_workers_held_job_that_was_cancelled_is_not_queued_again():
    h = Harness()
    h.s.add_worker("a", 1, prefetch=1)
    h.submit(3)
    assert h.schedule()[0] == [("a", [1]), ("a", [2])]
    assert h.cancel(2) == "a"
    assert [j.rid for j in h.s.remove_worker("a")] == [1]
    assert h.jobs[2].state == DROPPED and h.s.waiting == 1
    h.s.add_worker("b", 1)
    assert h.schedule()[0] == [("b", [3])]
