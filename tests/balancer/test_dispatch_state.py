"""The dispatcher's state machine driven by event lists: no Redis. Each test feeds signals
and command replies, asserts the commands that come back, and the state validates its
invariants after every event (``validate=True``)."""

from __future__ import annotations

import random

import pytest
from balancer.common import signals
from balancer.common.models import QueueConfig, WorkerInfo

from balancer.dispatch_state import (
    Assign,
    Assigned,
    CheckRetries,
    DispatchState,
    Mode,
    QueuesRead,
    ReadQueues,
    Reap,
    Recount,
    RefreshQueues,
    RunCascade,
    WatchDeadlines,
)


def beat(worker: str, queues: tuple[str, ...], capacity: int, leased: int = 0) -> signals.Signal:
    blob = WorkerInfo(worker, queues, capacity).to_blob()
    return signals.Signal(signals.HEARTBEAT, worker, leased, blob)


def sig(raw: str) -> signals.Signal:
    parsed = signals.parse(raw.encode())
    assert parsed is not None
    return parsed


def feed(state: DispatchState, *batch: signals.Signal) -> list[object]:
    """Apply signals; the commands they asked for."""
    out: list[object] = list(state.apply(list(batch), now=0.0))
    state.validate()
    return out


def cluster(*configs: QueueConfig, workers: dict[str, tuple[tuple[str, ...], int]] | None = None
            ) -> DispatchState:
    """A state that knows these queues (default: "default") and workers (default: w, 10
    slots on "default")."""
    state = DispatchState(random.Random(0), validate=True)
    state.refreshed({c.name: c for c in configs or (QueueConfig("default"),)})
    workers = workers or {"w": (("default",), 10)}
    feed(state, *(beat(w, q, c) for w, (q, c) in workers.items()))
    return state


def read(state: DispatchState, ready: dict[str, list[str]], **kw: object) -> object:
    heads = {q: float(i) for i, q in enumerate(ready)}
    return state.queues_read(QueuesRead(ready, heads, **kw), now=1.0,  # type: ignore[arg-type]
                             redis_now_ms=0.0)


def idle(state: DispatchState) -> DispatchState:
    """One round that reads every queue empty (none, when each is known empty already)."""
    command = state.begin_round()
    if state.queue_names - state.empty:
        assert isinstance(command, ReadQueues)
        assert read(state, {}) is None
    else:
        assert command is None
    assert state.mode is Mode.IDLE
    return state


def test_a_new_worker_makes_a_round_read_the_queues_it_has_room_for() -> None:
    state = cluster()
    assert state.mode is Mode.ACTIVE
    assert state.begin_round() == ReadQueues((("default", 10),), inflight=False)


def test_queues_read_empty_make_it_idle_then_quiet_and_rounds_do_nothing() -> None:
    state = idle(cluster())
    assert state.empty == {"default"} and state.wants_quiet()
    state.idle_set()
    assert state.mode is Mode.QUIET and state.quiet and state.idle
    assert state.begin_round() is None


def test_a_listed_submit_to_an_idle_state_is_leased_without_a_read() -> None:
    state = idle(cluster())
    assert feed(state, sig("S|default|a,b")) == []
    assert state.mode is Mode.ACTIVE and state.listed == {"default": ["a", "b"]}
    command = state.begin_round()
    assert command == Assign("w", "default", ("a", "b"), 10, 1, limited=False)
    assert state.assigned(Assigned(2, held=2)) is None
    assert state.view.workers["w"].leased == 2 and state.empty == {"default"}


def test_a_listed_submit_wakes_a_quiet_state_which_recounts_before_it_plans() -> None:
    state = cluster()
    assert isinstance(state.begin_round(), ReadQueues)
    assert isinstance(read(state, {"default": ["a"]}), Assign)
    assert state.assigned(Assigned(1, held=1)) is None
    assert state.empty == {"default"}  # drained: the read returned less than the room
    idle(state).idle_set()
    feed(state, sig("S|default|b"))
    assert state.mode is Mode.WAKING and state.quiet and not state.idle
    assert state.begin_round() == Recount(("w",))
    assert state.recounted({"w": 0}) == Assign("w", "default", ("b",), 10, 1, False)
    assert state.mode is Mode.ACTIVE


def test_a_deaf_state_counts_the_workers_and_reads_every_queue_at_each_round() -> None:
    """The wake list cannot be read: no ack tells what a worker freed, nor a submit what
    it queued. Each round recounts the workers that held leases, then reads the queues,
    whatever the state believed (here: idle, its queue known empty)."""
    state = cluster()
    assert isinstance(state.begin_round(), ReadQueues)
    assert isinstance(read(state, {"default": ["a"]}), Assign)
    assert state.assigned(Assigned(1, held=1)) is None
    idle(state)
    state.deaf()
    state.validate()
    assert state.mode is Mode.WAKING and not state.idle and state.empty == frozenset()
    assert state.begin_round() == Recount(("w",))
    assert state.recounted({"w": 0}) == ReadQueues((("default", 10),), inflight=False)
    assert state.view.workers["w"].leased == 0


def test_a_settled_ack_keeps_an_idle_state_idle_and_an_ack_that_queued_wakes_it() -> None:
    state = idle(cluster())
    feed(state, sig("k|w|0"))
    assert state.mode is Mode.IDLE and state.empty == {"default"}
    feed(state, sig("a|w|0"))
    assert state.mode is Mode.ACTIVE and state.empty == frozenset()


def test_a_listed_submit_that_does_not_fit_is_read_from_the_queue() -> None:
    state = idle(cluster())
    feed(state, sig("S|default|" + ",".join(f"t{i}" for i in range(11))))
    assert state.begin_round() == ReadQueues((("default", 10),), inflight=False)


def test_listed_submits_to_two_queues_are_read_and_leased_in_priority_order() -> None:
    state = cluster(QueueConfig("default"), QueueConfig("urgent", priority=5),
                    workers={"w": (("default", "urgent"), 1)})
    idle(state)
    feed(state, sig("S|default|low"), sig("S|urgent|high"))
    assert state.listed == {"default": ["low"], "urgent": ["high"]}
    assert isinstance(state.begin_round(), ReadQueues)
    assert read(state, {"default": ["low"], "urgent": ["high"]}) == Assign(
        "w", "urgent", ("high",), 1, 1, False)
    assert state.assigned(Assigned(1, held=1)) is None  # no room left for "low"


def test_a_paused_queue_gets_nothing_from_a_listed_submit() -> None:
    state = idle(cluster(QueueConfig("default", paused=True)))
    feed(state, sig("S|default|a"))
    assert isinstance(state.begin_round(), ReadQueues)
    assert read(state, {"default": ["a"]}) is None  # read, not leased


def test_a_limited_queue_reads_inflight_and_leases_within_its_limit() -> None:
    state = cluster(QueueConfig("default", concurrency_limit=2))
    assert state.begin_round() == ReadQueues((("default", 10),), inflight=True)
    command = read(state, {"default": ["a", "b", "c"]}, inflight={"default": 1})
    assert command == Assign("w", "default", ("a",), 10, 1, limited=True)


def test_a_worker_fuller_than_believed_makes_the_round_plan_again_at_once() -> None:
    state = cluster()
    assert isinstance(state.begin_round(), ReadQueues)
    assert isinstance(read(state, {"default": ["a", "b"]}), Assign)
    assert state.assigned(Assigned(1, held=10)) is None  # it took offered leases
    assert state.again and state.view.workers["w"].leased == 10
    assert "default" not in state.empty


def test_a_lost_lead_ends_the_round() -> None:
    state = cluster(workers={"a": (("default",), 1), "b": (("default",), 1)})
    assert isinstance(state.begin_round(), ReadQueues)
    assert isinstance(read(state, {"default": ["x", "y"]}), Assign)
    assert state.assigned(Assigned(-1)) is None and state.round is None


def test_a_failed_lease_goes_on_to_the_next_worker_and_a_shunned_one_gets_none() -> None:
    state = cluster(workers={"a": (("default",), 1), "b": (("default",), 1)})
    assert isinstance(state.begin_round(), ReadQueues)
    first = read(state, {"default": ["x", "y"]})
    assert isinstance(first, Assign)
    state.shun(first.worker)
    second = state.assigned(Assigned(0, failed=True))
    assert isinstance(second, Assign) and second.worker != first.worker
    assert state.assigned(Assigned(1, held=1)) is None
    assert state.begin_round() is None  # the other is full; the shunned one's room is not
    state.refreshed(dict(state.configs))  # tried again after a refresh
    assert state.begin_round() == ReadQueues((("default", 1),), inflight=False)


def test_a_skipped_queue_is_not_known_empty_and_its_listed_ids_are_read() -> None:
    state = idle(cluster())
    feed(state, sig("S|default|a"))
    state.skip("default")
    assert state.listed is None and "default" not in state.empty
    assert state.begin_round() is None  # skipped: not read until the refresh
    state.refreshed(dict(state.configs))
    assert isinstance(state.begin_round(), ReadQueues)


def test_bad_members_taken_out_during_a_read_keep_the_queue_unknown_and_rounds_going() -> None:
    state = cluster()
    assert isinstance(state.begin_round(), ReadQueues)
    assert read(state, {}, cleaned=frozenset({"default"})) is None
    assert state.mode is Mode.ACTIVE and state.again and state.empty == frozenset()


def test_signals_ask_for_upkeep_and_a_reap_comes_before_later_signals() -> None:
    state = idle(cluster())
    commands = feed(state, sig("x|w"), sig("q"), sig("c"), sig("r"), sig("l|w|3"))
    assert commands == [Reap("w"), RefreshQueues(), RunCascade(), CheckRetries(),
                        WatchDeadlines()]
    assert state.view.workers["w"].leased == 3
    assert feed(state, sig("s|newqueue")) == [RefreshQueues(frozenset({"newqueue"}))]


def test_an_idle_state_reads_again_after_the_recheck_interval() -> None:
    state = idle(cluster())
    state.tick(now=1.0 + 4.0, recheck=5.0)
    assert state.mode is Mode.IDLE
    state.tick(now=1.0 + 5.1, recheck=5.0)
    assert state.mode is Mode.ACTIVE and isinstance(state.begin_round(), ReadQueues)


def test_a_new_leader_resets_to_active_and_forgets_what_it_knew_empty() -> None:
    state = idle(cluster())
    state.idle_set()
    state.reset()
    assert state.mode is Mode.ACTIVE and not state.quiet and state.empty == frozenset()


@pytest.mark.parametrize("break_it", [
    lambda s: setattr(s, "listed", {"other": ["a"]}),  # listed ids of a queue not read empty
    lambda s: setattr(s, "again", True),  # work left over while idle
    lambda s: s.skipped.add("default"),  # a skipped queue known empty
    lambda s: setattr(s.view.workers["w"], "leased", -1),  # a count below zero
])
def test_validate_catches_a_broken_invariant(break_it: object) -> None:
    state = idle(cluster())
    break_it(state)  # type: ignore[operator]
    with pytest.raises(AssertionError):
        state.validate()


# -- tag limits ------------------------------------------------------------------------------


def tagged_cluster(limits: dict[str, int], capacity: int = 10) -> DispatchState:
    state = DispatchState(random.Random(0), validate=True)
    state.refreshed({"default": QueueConfig("default")}, limits)
    feed(state, beat("w", ("default",), capacity))
    return state


def test_with_a_tag_limit_a_read_asks_for_tags_and_passes_over_a_full_tag() -> None:
    state = tagged_cluster({"db": 2})
    assert state.begin_round() == ReadQueues((("default", 10),), inflight=False, tags=True)
    command = read(state, {"default": ["d1", "d2", "d3", "p1", "d4", "p2"]},
                   tags={f"d{i}": ("db", "io") for i in range(1, 5)}, tag_leased={"db": 1})
    assert command == Assign("w", "default", ("d1", "p1", "p2"), 10, 1, limited=False,
                             tags=("db", "", ""))
    assert state.assigned(Assigned(3, held=3)) is None
    assert "default" not in state.empty  # the passed-over tasks wait in it


def test_tasks_passed_over_make_the_next_read_reach_further_behind_them() -> None:
    state = tagged_cluster({"db": 1}, capacity=2)
    assert state.begin_round() == ReadQueues((("default", 2),), inflight=False, tags=True)
    command = read(state, {"default": ["d1", "d2"]}, tags={"d1": ("db",), "d2": ("db",)})
    assert command == Assign("w", "default", ("d1",), 2, 1, limited=False, tags=("db",))
    assert state.assigned(Assigned(1, held=1)) is None
    assert state.again  # the read was full and held a passed-over task: read further
    read_more = state.begin_round()
    assert read_more == ReadQueues((("default", 2),), inflight=False, tags=True)  # 1 free + 1
    command = read(state, {"default": ["d2", "p1"]}, tags={"d2": ("db",)},
                   tag_leased={"db": 1})
    assert command == Assign("w", "default", ("p1",), 2, 1, limited=False)
    assert state.assigned(Assigned(1, held=2)) is None
    assert not state.again  # nothing more passed over than before: no spinning


def test_a_tag_at_its_limit_leaves_the_queue_unread_empty_and_the_state_active() -> None:
    state = tagged_cluster({"db": 1})
    state.begin_round()
    assert read(state, {"default": ["d2"]}, tags={"d2": ("db",)}, tag_leased={"db": 1}) is None
    assert state.mode is Mode.ACTIVE and "default" not in state.empty


def test_tag_limits_count_across_the_queues_of_one_round() -> None:
    state = DispatchState(random.Random(0), validate=True)
    state.refreshed({"a": QueueConfig("a", priority=1), "b": QueueConfig("b")}, {"db": 1})
    feed(state, beat("w", ("a", "b"), 10))
    state.begin_round()
    command = read(state, {"a": ["a1"], "b": ["b1", "b2"]},
                   tags={"a1": ("db",), "b1": ("db",)})
    assert command == Assign("w", "a", ("a1",), 10, 1, limited=False, tags=("db",))
    assert state.assigned(Assigned(1, held=1)) == Assign("w", "b", ("b2",), 10, 1,
                                                          limited=False)


def test_a_listed_submit_is_read_from_its_queue_while_a_tag_has_a_limit() -> None:
    state = tagged_cluster({"db": 1})
    idle(state)
    feed(state, sig("S|default|a"))
    assert state.begin_round() == ReadQueues((("default", 10),), inflight=False, tags=True)


def test_without_tag_limits_nothing_asks_for_tags() -> None:
    state = cluster()
    command = state.begin_round()
    assert command == ReadQueues((("default", 10),), inflight=False)
    assert isinstance(command, ReadQueues) and not command.tags
    assert read(state, {"default": ["a"]}) == Assign("w", "default", ("a",), 10, 1, False)


def test_a_round_with_no_room_for_a_queue_not_known_empty_names_it_backlogged() -> None:
    state = cluster(workers={"w": (("default",), 1)})
    assert state.begin_round() == ReadQueues((("default", 1),), inflight=False)
    command = read(state, {"default": ["a", "b"]})
    assert isinstance(command, Assign) and command.task_ids == ("a",)
    assert state.assigned(Assigned(1, held=1)) is None  # "b" waits: no room left
    assert state.begin_round() is None and state.backlogged == {"default"}
    feed(state, sig("k|w|0"))  # the slot freed: a round reads the queue again
    assert state.begin_round() == ReadQueues((("default", 1),), inflight=False)
    assert state.backlogged == frozenset()


def tenants(n: int = 3) -> DispatchState:
    """Queues t0..t<n-1>, one "*" worker of 10 slots, every queue read empty."""
    state = cluster(*(QueueConfig(f"t{i}") for i in range(n)), workers={"w": (("*",), 10)})
    return idle(state)


def test_a_round_reads_only_the_queues_a_signal_named_and_not_those_known_empty() -> None:
    state = tenants()
    assert state.empty == {"t0", "t1", "t2"}
    feed(state, sig("s|t1"))
    assert state.empty == {"t0", "t2"}
    assert state.begin_round() == ReadQueues((("t1", 10),), inflight=False)
    assert isinstance(read(state, {"t1": ["a"]}), Assign)
    assert state.assigned(Assigned(1, held=1)) is None
    assert state.empty == {"t0", "t1", "t2"}  # t1 drained: the read returned all it held


def test_an_ack_naming_the_queues_it_filled_has_those_read_and_one_naming_none_all() -> None:
    state = tenants()
    feed(state, sig("k|w|0"), sig("s|t0 t2"))  # this release's ack that queued dependents
    assert state.begin_round() == ReadQueues((("t0", 10), ("t2", 10)), inflight=False)
    assert read(state, {}) is None
    feed(state, sig("a|w|0"))  # an earlier release's: it may have queued anywhere
    assert state.begin_round() == ReadQueues((("t0", 10), ("t1", 10), ("t2", 10)),
                                             inflight=False)


def test_listed_ids_dropped_by_an_ack_leave_their_queue_to_be_read() -> None:
    state = tenants()
    feed(state, sig("S|t1|a"), sig("k|w|0"))
    assert state.listed is None and state.empty == {"t0", "t2"}
    assert state.begin_round() == ReadQueues((("t1", 10),), inflight=False)


def test_a_busy_state_forgets_what_it_knew_empty_every_recheck() -> None:
    """A task queued with no signal (the wake list dropped it past its cap) waits at most
    a recheck, even while other queues keep the dispatcher busy."""
    state = tenants()
    feed(state, sig("s|t0"))
    state.tick(now=2.0, recheck=5.0)
    assert state.empty == {"t1", "t2"}
    state.tick(now=5.5, recheck=5.0)
    assert state.mode is Mode.ACTIVE and state.empty == frozenset()
    assert state.begin_round() == ReadQueues((("t0", 10), ("t1", 10), ("t2", 10)),
                                             inflight=False)


def test_every_queue_known_empty_makes_a_round_idle_without_a_read() -> None:
    state = tenants()
    feed(state, sig("k|w|0"))  # a freed slot, nothing queued
    assert state.mode is Mode.IDLE and state.begin_round() is None
    state.stale()
    assert isinstance(state.begin_round(), ReadQueues)


def test_a_queue_a_submit_named_first_is_added_and_read_alone() -> None:
    state = tenants()
    assert feed(state, sig("s|t9")) == [RefreshQueues(frozenset({"t9"}))]
    state.added({"t9": QueueConfig("t9")})
    assert state.queue_names == {"t0", "t1", "t2", "t9"}
    assert state.begin_round() == ReadQueues((("t9", 10),), inflight=False)


def test_depths_are_weighed_again_only_where_a_mean_or_a_priority_changed() -> None:
    state = tenants()

    def report(**means: float) -> None:
        blob = WorkerInfo("w", ("*",), 10, durations=means).to_blob()
        feed(state, signals.Signal(signals.HEARTBEAT, "w", 0, blob))

    report(t0=1.0, t1=1.0)  # 1 ms tasks: 20 a slot
    assert state.depths() == {"t0": 20, "t1": 20, "t2": 1}
    version = state.depths_version
    report(t0=1.0, t1=1.0)  # reported again, the same
    assert state.depths() == {"t0": 20, "t1": 20, "t2": 1}
    assert state.depths_version == version
    report(t0=2.0, t1=1.0)
    assert state.depths() == {"t0": 10, "t1": 20, "t2": 1}
    assert state.depths_version == version + 1
    state.added({"t3": QueueConfig("t3", priority=5)})  # outranks them all for the "*" worker
    assert state.depths() == {"t0": 1, "t1": 1, "t2": 1, "t3": 1}
    assert state.depths_version > version


def test_a_backlog_over_many_queues_is_read_where_leased_from_and_remembered_elsewhere(
        ) -> None:
    state = cluster(*(QueueConfig(f"t{i}") for i in range(3)), workers={"w": (("*",), 1)})
    assert state.begin_round() == ReadQueues((("t0", 1), ("t1", 1), ("t2", 1)), inflight=False)
    assert read(state, {"t0": ["a"], "t1": ["b"], "t2": ["c"]}) == Assign(
        "w", "t0", ("a",), 1, 1, False)
    assert state.assigned(Assigned(1, held=1)) is None
    assert set(state.heads) == {"t1", "t2"}  # t0 was leased from: read it again
    feed(state, sig("k|w|0"))
    assert state.begin_round() == ReadQueues((("t0", 1),), inflight=False)
    assert read(state, {}) == Assign("w", "t1", ("b",), 1, 1, False)  # as remembered
    assert state.assigned(Assigned(1, held=1)) is None
    assert state.again and "t1" not in state.empty  # more may have come unsignalled
    feed(state, sig("k|w|0"), sig("s|t2"))  # t2 got another task: read it again
    assert state.begin_round() == ReadQueues((("t1", 1), ("t2", 1)), inflight=False)


def test_a_remembered_task_taken_meanwhile_costs_one_lease_that_finds_it_gone() -> None:
    """A cancel takes a task out of its queue with no signal: the lease script skips the
    id, and the queue is read at the next round."""
    state = cluster(*(QueueConfig(f"t{i}") for i in range(2)), workers={"w": (("*",), 1)})
    assert isinstance(state.begin_round(), ReadQueues)
    assert isinstance(read(state, {"t0": ["a"], "t1": ["b"]}), Assign)
    assert state.assigned(Assigned(1, held=1)) is None
    feed(state, sig("k|w|0"))
    assert state.begin_round() == ReadQueues((("t0", 1),), inflight=False)
    assert read(state, {}) == Assign("w", "t1", ("b",), 1, 1, False)
    assert state.assigned(Assigned(0, held=0)) is None  # "b" was cancelled
    assert "t1" not in state.heads and "t1" not in state.empty
    assert state.begin_round() == ReadQueues((("t1", 1),), inflight=False)
