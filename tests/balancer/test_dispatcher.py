"""The dispatcher loop on fakeredis, step by step: what it reads and what it leases."""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any, cast

import pytest
import redis
from balancer.common import codec, protocol, signals
from balancer.common.aside import Aside
from balancer.common.keys import Keys
from balancer.common.models import QueueConfig, WorkerInfo
from balancer.common.scripts import Done, Scripts
from balancer.common.settings import Settings

from balancer import Flow, admin, task
from balancer.dispatcher import IDLE_RECHECK, JOB_RETRY, Dispatcher
from balancer.episodes import EPISODE_QUIET
from balancer.scheduling import CPU_WEIGHT


@task
def work(n: int) -> int:
    return n


@task(timeout=0.01)
def timed(n: int) -> int:
    return n


@task(queue_name="one")
def on_one(n: int) -> int:
    return n


@task(tags=["db"])
def on_db(n: int) -> int:
    return n


@pytest.fixture
def setup(fake: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    settings = settings.replace(dispatch_tick=0.01)
    keys = Keys(settings.namespace)
    Scripts(fake, keys).heartbeat("w", WorkerInfo("w", ("default",), 10).to_blob(), 60_000)
    dispatcher = Dispatcher(fake, settings, rng=random.Random(0))
    dispatcher.state.validating = True  # its invariants checked after every event
    reads: list[str] = []
    real_pipeline = fake.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        zrange = pipe.zrange

        def counted(name: str, *rest: Any, **kw: Any) -> Any:
            reads.append(name)
            return zrange(name, *rest, **kw)

        pipe.zrange = counted
        return pipe

    monkeypatch.setattr(fake, "pipeline", counting_pipeline)
    return dispatcher, keys, reads


def submit(fake: redis.Redis, settings: Settings, n: int) -> None:
    with Flow("f") as flow:
        for i in range(n):
            work(i)
    flow.submit(fake, namespace=settings.namespace)


def inbox(fake: redis.Redis, keys: Keys) -> list[str]:
    return [lease.task_id for lease in map(signals.parse_lease,
                                             fake.lrange(keys.inbox("w"), 0, -1)) if lease]


def settle(dispatcher: Dispatcher, steps: int = 5) -> None:
    for _ in range(steps):
        dispatcher.step()


def idle_after_one(fake: redis.Redis, settings: Settings, setup: Any,
                   offer: bool = False) -> None:
    """One task submitted and leased (read from the queue), then the queue found empty.
    Without ``offer``, the standing offer the dispatcher then made is taken away, so that
    submits go through the dispatcher."""
    dispatcher, keys, reads = setup
    submit(fake, settings, 1)
    settle(dispatcher)
    reads.clear()
    if not offer:
        fake.delete(keys.offer("default"))


def learn_offer(fake: redis.Redis, settings: Settings, setup: Any) -> None:
    """The dispatcher stands an offer, and this client learns it from a submit that goes
    through the dispatcher."""
    idle_after_one(fake, settings, setup, offer=True)
    submit(fake, settings, 1)
    settle(setup[0])


def submit_timed(fake: redis.Redis, settings: Settings) -> None:
    """A one-task flow whose task has a timeout."""
    with Flow("timed") as flow:
        timed(1)
    flow.submit(fake, namespace=settings.namespace)


def test_an_idle_cluster_leases_a_small_submit_without_reading_the_queue(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, reads = setup
    idle_after_one(fake, settings, setup)
    assert len(inbox(fake, keys)) == 1 and dispatcher.state.idle
    submit(fake, settings, 3)
    dispatcher.step()
    assert len(inbox(fake, keys)) == 4
    assert reads == []  # leased from the ids the submit signal listed
    assert fake.zcard(keys.queue("default")) == 0


def test_an_ack_that_queued_nothing_leaves_an_idle_dispatcher_idle(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, reads = setup
    idle_after_one(fake, settings, setup)
    fake.rpush(keys.wake, "k|w|0")  # the task completed, no dependent unlocked
    settle(dispatcher)
    assert reads == [] and dispatcher.state.idle
    assert dispatcher.view.workers["w"].leased == 0
    fake.rpush(keys.wake, "a|w|0")  # dependents or retries may have been queued
    settle(dispatcher)
    assert reads == [keys.queue("default")]


def test_a_small_submit_does_not_make_the_dispatcher_read_the_gate(
        fake: redis.Redis, settings: Settings, setup: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A submit that lists its ready ids gated none: only signals of changes that may
    have gated a task (here an ack that queued dependents) make the gate be read."""
    dispatcher, keys, _ = setup
    idle_after_one(fake, settings, setup)
    runs: list[int] = []
    gate_run = dispatcher.gates.run
    monkeypatch.setattr(dispatcher.gates, "run", lambda: runs.append(1) or gate_run())
    dispatcher._gate_at = dispatcher.clock()  # read just now: the recheck is not due
    submit(fake, settings, 1)
    dispatcher.step()
    assert runs == [] and len(inbox(fake, keys)) == 2
    fake.rpush(keys.wake, "a|w|0")
    dispatcher.step()
    assert runs == [1]


def test_a_submit_that_does_not_fit_is_read_from_the_queue_in_order(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, reads = setup
    idle_after_one(fake, settings, setup)
    submit(fake, settings, 12)  # 9 free slots: they do not all fit
    dispatcher.step()
    assert reads  # fell back to reading the queue head
    assert len(inbox(fake, keys)) == 10
    assert fake.zcard(keys.queue("default")) == 3


def test_a_listed_submit_to_a_queue_not_seen_empty_is_read_from_the_queue(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, reads = setup
    idle_after_one(fake, settings, setup)
    # A task the dispatcher was not told of (as after a lost signal) sits in the queue.
    fake.zadd(keys.queue("default"), {"unannounced": 0.0})
    fake.hset(keys.task("unannounced"), mapping={"fn": "tests.x:y", "args": b"",
                                                 "queue": "default", "flow": "f"})
    dispatcher.state.stale()
    submit(fake, settings, 2)
    dispatcher.step()
    assert reads  # the queue was read: the unannounced task goes first
    assert "unannounced" in inbox(fake, keys)


@task(queue_name="urgent")
def urgent(n: int) -> int:
    return n


def test_listed_submits_to_several_queues_are_leased_after_reading_in_priority_order(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, reads = setup
    Scripts(fake, keys).heartbeat(
        "w", WorkerInfo("w", ("default", "urgent"), 3).to_blob(), 60_000)
    fake.hset(keys.queue_conf("urgent"), "priority", 5)
    with Flow("warm") as flow:
        work(0)
        urgent(0)
    flow.submit(fake, namespace=settings.namespace)
    settle(dispatcher)  # both leased, both queues seen empty: 1 slot left
    fake.delete(keys.offer("default"), keys.offer("urgent"))
    reads.clear()
    for fn in (work, urgent):  # the low one first
        with Flow("one") as flow:
            fn(1)
        flow.submit(fake, namespace=settings.namespace)
    dispatcher.step()
    assert reads  # two queues listed: read, so that the higher priority goes first
    assert fake.zcard(keys.queue("urgent")) == 0
    assert fake.zcard(keys.queue("default")) == 1  # the low one waits for a slot


def test_a_paused_queue_gets_nothing_from_a_listed_submit(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    idle_after_one(fake, settings, setup)
    dispatcher.configs["default"] = QueueConfig("default", paused=True)
    submit(fake, settings, 2)
    dispatcher.step()
    assert len(inbox(fake, keys)) == 1
    assert fake.zcard(keys.queue("default")) == 2


def test_a_task_whose_signal_was_lost_is_leased_by_the_idle_recheck(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    idle_after_one(fake, settings, setup)
    now = [dispatcher.clock()]
    dispatcher.clock = lambda: now[0]
    submit(fake, settings, 1)
    fake.delete(keys.wake)  # the submit's signal is lost
    settle(dispatcher)
    assert len(inbox(fake, keys)) == 1  # idle, and nothing told it otherwise
    now[0] += IDLE_RECHECK + 0.1
    settle(dispatcher)
    assert len(inbox(fake, keys)) == 2
    assert fake.zcard(keys.queue("default")) == 0


def test_a_worker_dated_by_light_beats_lives_and_a_silent_one_is_reaped(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    settle(dispatcher)
    assert "w" in dispatcher.view.workers
    now = [dispatcher.clock()]
    dispatcher.clock = lambda: now[0]
    silence = settings.worker_timeout + 1

    def redis_ms() -> int:
        seconds, micros = fake.time()
        return seconds * 1000 + micros // 1000

    now[0] += silence  # no signal from w all that time, but light beats
    assert Scripts(fake, keys).keep_alive("w", redis_ms())
    settle(dispatcher)
    assert "w" in dispatcher.view.workers
    fake.zadd(keys.workers, {"w": redis_ms() - silence * 1000})  # its last beat, long ago
    now[0] += silence
    settle(dispatcher)
    assert "w" not in dispatcher.view.workers
    assert fake.zscore(keys.workers, "w") is None


def test_an_idle_dispatcher_stands_an_offer_that_a_small_submit_takes_itself(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, reads = setup
    idle_after_one(fake, settings, setup, offer=True)
    offer = signals.parse_offer(fake.get(keys.offer("default")))
    assert offer is not None and offer.workers == (("w", 10, 0.0, 10),)
    submit(fake, settings, 1)  # through the dispatcher: this client had not seen the offer
    settle(dispatcher)
    assert len(inbox(fake, keys)) == 2
    reads.clear()
    fake.delete(keys.wake)
    submit(fake, settings, 2)  # no dispatcher step in between
    assert len(inbox(fake, keys)) == 4
    assert fake.zcard(keys.queue("default")) == 0
    assert fake.llen(keys.wake) == 0  # no deadline to watch: the dispatcher sleeps on
    dispatcher.step()
    assert reads == []  # nothing read: the queue stayed as empty as the dispatcher knew


def test_an_offer_taken_with_deadlines_wakes_the_dispatcher_to_watch_them(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, reads = setup
    learn_offer(fake, settings, setup)
    dispatcher._deadlines_pending = False
    reads.clear()
    submit_timed(fake, settings)
    assert len(inbox(fake, keys)) == 3
    assert [s.decode() for s in fake.lrange(keys.wake, 0, -1)] == ["l|w|3"]
    dispatcher.step()
    assert dispatcher.view.workers["w"].leased == 3 and dispatcher._deadlines_pending
    assert reads == []


def submit_one(fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    """A task of queue "one", through the dispatcher (no standing offer to take)."""
    fake.delete(keys.offer("one"))
    with Flow("f") as flow:
        on_one(1)
    flow.submit(fake, namespace=settings.namespace)


def with_solo(fake: redis.Redis, settings: Settings, setup: Any) -> Scripts:
    """Worker "solo" serves queue "one" with one slot; "w" serves "default", read empty."""
    keys = setup[1]
    scripts = Scripts(fake, keys)
    scripts.heartbeat("solo", WorkerInfo("solo", ("one",), 1).to_blob(), 60_000)
    idle_after_one(fake, settings, setup)
    return scripts


def ack_solo(fake: redis.Redis, keys: Keys, scripts: Scripts) -> None:
    """Solo runs the task in its inbox and acknowledges it."""
    lease = signals.parse_lease(cast(bytes, fake.lpop(keys.inbox("solo"))))
    assert lease is not None
    done = Done(lease.task_id, lease.token, "one", lease.flow, 1, b"")
    assert scripts.ack("solo", [done], 60_000, 2) == [True]


def test_an_ack_frees_a_slot_for_a_queue_left_unread_for_want_of_room(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    scripts = with_solo(fake, settings, setup)
    for _ in range(2):
        submit_one(fake, settings, keys)
    settle(dispatcher)
    assert fake.zcard(keys.queue("one")) == 1  # waits for solo's slot
    assert dispatcher.state.idle  # "default", which w has room for, was read empty
    assert not fake.exists(keys.idle)  # "one" was not: solo's ack must wake us
    ack_solo(fake, keys, scripts)
    assert [s.decode() for s in fake.lrange(keys.wake, 0, -1)] == ["k|solo|0"]
    settle(dispatcher, 2)
    assert fake.llen(keys.inbox("solo")) == 1 and fake.zcard(keys.queue("one")) == 0


def test_an_idle_dispatcher_is_not_woken_by_acks_and_recounts_when_work_comes(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    scripts = with_solo(fake, settings, setup)
    submit_one(fake, settings, keys)
    settle(dispatcher)
    ack_solo(fake, keys, scripts)  # wakes us: "one" was not known empty
    settle(dispatcher)
    assert fake.exists(keys.idle)  # every served queue was read empty
    submit_one(fake, settings, keys)
    settle(dispatcher)
    assert fake.exists(keys.idle) and dispatcher.view.workers["solo"].leased == 1
    fake.delete(keys.wake)
    ack_solo(fake, keys, scripts)
    assert fake.llen(keys.wake) == 0  # its slot is free, and we sleep on
    assert dispatcher.view.workers["solo"].leased == 1
    submit_one(fake, settings, keys)
    dispatcher.step()  # what solo holds is read again before its room is weighed
    assert fake.llen(keys.inbox("solo")) == 1 and fake.zcard(keys.queue("one")) == 0
    assert not fake.exists(keys.idle)


def test_a_new_leader_clears_the_idle_key_before_it_counts(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    """Its predecessor's quiet: acks may have been silent, and the new leader counts
    everything afresh, with acks signalling again from before its count."""
    idle_after_one(fake, settings, setup)
    keys = setup[1]
    assert fake.exists(keys.idle)
    fake.delete(keys.leader)
    successor = Dispatcher(fake, settings.replace(dispatch_tick=0.01))
    assert successor._lead()
    assert not fake.exists(keys.idle) and not successor.state.quiet


def test_a_worker_fuller_than_believed_does_not_keep_a_task_from_a_free_one(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    """Leases taken by offer are told at the next ack: meanwhile the dispatcher may plan
    onto a full worker. Its refusal makes the dispatcher plan again at once, not at its
    next signal or tick."""
    dispatcher, keys, _ = setup
    scripts = Scripts(fake, keys)
    for wid in ("a", "b"):
        scripts.heartbeat(wid, WorkerInfo(wid, ("one",), 1).to_blob(), 60_000)
    settle(dispatcher)
    dispatcher.view.workers["b"].cpu = 0.5 / CPU_WEIGHT  # a busier host: a is planned first
    fake.sadd(keys.leases("a"), "by-offer|1.x9u")  # a's slot, unknown to the dispatcher
    with Flow("f") as flow:
        on_one(1)
    flow.submit(fake, namespace=settings.namespace)
    dispatcher.step()
    assert fake.llen(keys.inbox("a")) == 0 and dispatcher.view.workers["a"].leased == 1
    assert dispatcher._wait_time() == 0.0
    dispatcher.step()
    assert fake.llen(keys.inbox("b")) == 1 and fake.zcard(keys.queue("one")) == 0


def test_an_offer_is_withdrawn_when_its_queue_is_paused(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    idle_after_one(fake, settings, setup, offer=True)
    assert fake.exists(keys.offer("default"))
    fake.hset(keys.queue_conf("default"), "paused", "1")
    fake.rpush(keys.wake, signals.QUEUES)
    settle(dispatcher)
    assert not fake.exists(keys.offer("default"))
    submit(fake, settings, 1)
    settle(dispatcher)
    assert fake.zcard(keys.queue("default")) == 1  # paused: it waits


def test_a_task_with_a_timeout_leased_by_offer_is_failed_by_the_deadline_backstop(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    learn_offer(fake, settings, setup)
    submit_timed(fake, settings)  # leased by the offer, deadline set
    [member] = [m.decode() for m in fake.zrange(keys.deadlines, 0, -1)]
    task_id = member.split("|")[0]
    fake.zadd(keys.deadlines, {member: 0})  # long past due: the worker lost the task
    dispatcher._deadlines_at = 0.0
    settle(dispatcher)
    assert fake.hget(keys.task(task_id), "state") == b"failed"


def test_an_upkeep_job_tripping_on_a_bad_key_pauses_alone_and_is_logged_once(
        fake: redis.Redis, settings: Settings, setup: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    dispatcher, keys, _ = setup
    caplog.set_level(logging.INFO, logger="balancer.dispatcher")
    now = [dispatcher.clock()]
    dispatcher.clock = lambda: now[0]
    fake.set(keys.delayed, "not a sorted set")  # the retries job trips on it at every try
    for n in range(1, 4):
        submit(fake, settings, 1)
        settle(dispatcher)
        assert len(inbox(fake, keys)) == n  # dispatching goes on
        now[0] += JOB_RETRY + 0.1
    said = [r.getMessage() for r in caplog.records if "upkeep job retries" in r.getMessage()]
    assert len(said) == 1 and "WRONGTYPE" in said[0]
    fake.delete(keys.delayed)
    settle(dispatcher)
    assert "upkeep job retries succeeds again" in caplog.text


def test_failed_steps_are_logged_once_per_episode_and_its_end_once(
        fake: redis.Redis, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = Dispatcher(fake, settings)
    caplog.set_level(logging.INFO, logger="balancer.dispatcher")
    now = [0.0]
    dispatcher.clock = lambda: now[0]
    oom = redis.exceptions.OutOfMemoryError("command not allowed when used memory >"
                                            " 'maxmemory'", status_code="OOM")
    outcomes: list[Exception | None] = [oom, oom, oom, None, None]

    def step() -> None:
        now[0] += 1.0 if outcomes[0] else EPISODE_QUIET
        outcome = outcomes.pop(0)
        if not outcomes:
            dispatcher.stop()
        if outcome is not None:
            raise outcome

    dispatcher.step = step  # type: ignore[method-assign]
    dispatcher.run()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis refuses commands (OOM" in m for m in messages) == 1
    assert sum("Redis serves again, after 3 failed steps" in m for m in messages) == 1
    assert dispatcher.token is None  # it leads again, and reloads, once Redis serves


def test_a_worker_whose_inbox_is_of_the_wrong_type_is_passed_over_and_reported_once(
        fake: redis.Redis, settings: Settings, setup: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    dispatcher, keys, _ = setup
    caplog.set_level(logging.WARNING, logger="balancer.dispatcher")
    Scripts(fake, keys).heartbeat("v", WorkerInfo("v", ("default",), 10).to_blob(), 60_000)
    fake.set(keys.inbox("w"), "operator data")  # a lease to w fails inside the script
    for _ in range(3):
        submit(fake, settings, 3)
        settle(dispatcher)
    assert fake.llen(keys.inbox("v")) == 9 and fake.zcard(keys.queue("default")) == 0
    assert fake.get(keys.inbox("w")) == b"operator data"  # left as it is
    (entry,) = fake.hkeys(keys.aside)
    assert caplog.text.count(f"entry={entry.decode()}") == 1


def test_a_queue_key_turned_to_the_wrong_type_under_a_listed_submit_is_skipped(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    idle_after_one(fake, settings, setup)
    submit(fake, settings, 2)  # listed in its signal: leased without reading the queue
    fake.delete(keys.queue("default"))
    fake.set(keys.queue("default"), "operator data")  # the lease script trips on it
    settle(dispatcher)
    assert len(inbox(fake, keys)) == 1 and "default" in dispatcher.state.skipped
    (row,) = [r for r in map(Aside.from_blob, fake.hvals(keys.aside))]
    assert (row.kind, row.key) == ("wrong-type", keys.queue("default"))
    assert fake.get(keys.queue("default")) == b"operator data"


@pytest.mark.parametrize(("served", "depth"), [(("one",), 20), (("one", "hi"), 1)])
def test_a_lease_carries_the_prefetch_depth_the_dispatcher_chose(
        fake: redis.Redis, settings: Settings, served: tuple[str, ...], depth: int) -> None:
    """Tasks of 1 ms are prefetched 20 deep, unless the worker also serves a queue of
    higher priority: the lease says which, so a pool child need not judge it again."""
    keys = Keys(settings.namespace)
    fake.sadd(keys.queues, "hi")
    fake.hset(keys.queue_conf("hi"), "priority", 10)
    info = WorkerInfo("p", served, 2, durations={"one": 1.0})
    Scripts(fake, keys).heartbeat("p", info.to_blob(), 60_000)
    submit_one(fake, settings, keys)
    dispatcher = Dispatcher(fake, settings.replace(dispatch_tick=0.01), rng=random.Random(0))
    dispatcher.step()
    lease = signals.parse_lease(cast(bytes, fake.lindex(keys.inbox("p"), 0)))
    assert lease is not None and lease.depth == depth


def test_tasks_at_their_tags_limit_wait_and_the_others_behind_them_go(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    admin.configure_tag(fake, keys, "db", 2)
    with Flow("tagged") as flow:
        for i in range(4):
            on_db(i)
        for i in range(3):
            work(i)
    flow.submit(fake, namespace=settings.namespace)
    settle(dispatcher)
    leased = [lease for lease in map(signals.parse_lease, fake.lrange(keys.inbox("w"), 0, -1))
              if lease]
    tagged = [lease for lease in leased if fake.hget(keys.task(lease.task_id), "tags")]
    assert (len(tagged), len(leased)) == (2, 5)  # 2 of 4 db tasks, all 3 others
    assert fake.hget(keys.tag_inflight, "db") == b"2"
    assert fake.zcard(keys.queue("default")) == 2
    done = tagged[0]
    fake.lrem(keys.inbox("w"), 1, done.raw)
    Scripts(fake, keys).ack("w", [Done(done.task_id, done.token, "default", done.flow, 1,
                                       b"\xc0")], 60_000, 2)
    settle(dispatcher)
    assert fake.hget(keys.tag_inflight, "db") == b"2"  # its place went to the next one
    assert fake.zcard(keys.queue("default")) == 1


def test_the_workers_silence_is_scanned_when_the_quietest_may_be_overdue_not_every_turn(
        fake: redis.Redis, settings: Settings, setup: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dispatcher, _, _ = setup
    settle(dispatcher)
    now = [dispatcher.clock()]
    dispatcher.clock = lambda: now[0]
    scans: list[float] = []
    overdue = dispatcher.view.overdue
    monkeypatch.setattr(dispatcher.view, "overdue",
                        lambda at: scans.append(at) or overdue(at))
    settle(dispatcher, 10)  # w was heard from just now: not one scan
    assert scans == []
    now[0] += settings.worker_timeout + 0.01  # its silence may have reached the timeout
    settle(dispatcher, 10)
    assert len(scans) >= 1 and len(scans) <= 2  # looked (light beats may date it)


def test_a_round_is_cut_when_the_lease_is_due_and_the_rest_leased_after_renewing(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    dispatcher, keys, _ = setup
    settle(dispatcher)
    for w in ("w2", "w3"):
        Scripts(fake, keys).heartbeat(w, WorkerInfo(w, ("default",), 1).to_blob(), 60_000)
    settle(dispatcher)
    fake.delete(keys.offer("default"))  # submits go through the dispatcher
    with Flow("f") as flow:
        for i in range(12):
            work(i)
    flow.submit(fake, namespace=settings.namespace)
    renewals: list[int] = []
    real_lead = dispatcher.scripts.lead

    def lead(*args: Any) -> Any:
        renewals.append(1)
        return real_lead(*args)

    dispatcher.scripts.lead = lead  # type: ignore[method-assign]
    dispatcher._renew_at = 0.0  # due: no lease may be made before it is renewed
    dispatcher._apply(dispatcher._signals(0.0))  # the submit's
    dispatcher._timers()  # its queue's settings read
    dispatcher._dispatch()
    assert dispatcher.state.again and fake.zcard(keys.queue("default")) == 12  # cut at once
    settle(dispatcher)
    assert renewals  # renewed, then leased
    assert fake.zcard(keys.queue("default")) == 0


def test_a_queue_left_for_want_of_room_is_told_to_submits_which_then_wake_no_dispatcher(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    """Tasks beyond the workers' room wait in their queue; the dispatcher sets its backlog
    key, so that a small submit queueing behind them does not wake it for nothing. Room
    coming (here a worker's larger capacity) wakes it: it reads the queue, dropping the
    key first, and leases every task."""
    dispatcher, keys, _ = setup
    for _ in range(12):
        fake.delete(keys.offer("default"))  # no offer: every submit goes to the queue
        submit(fake, settings, 1)
    settle(dispatcher)
    assert len(inbox(fake, keys)) == 10 and fake.zcard(keys.queue("default")) == 2
    assert fake.exists(keys.backlog("default"))
    assert 0 < fake.pttl(keys.backlog("default")) <= 1000  # a short life: renewed, or gone
    fake.delete(keys.wake)
    submit(fake, settings, 1)
    assert fake.zcard(keys.queue("default")) == 3 and fake.llen(keys.wake) == 0
    Scripts(fake, keys).heartbeat("w", WorkerInfo("w", ("default",), 20).to_blob(), 60_000)
    settle(dispatcher)
    assert len(inbox(fake, keys)) == 13 and fake.zcard(keys.queue("default")) == 0
    assert not fake.exists(keys.backlog("default"))


def test_a_wait_for_signals_refused_for_another_reason_is_no_broken_wake_list(
        fake: redis.Redis, setup: Any) -> None:
    """Only WRONGTYPE says the wake list is clobbered: a refusal (NOPERM, a command a
    server does not know) is raised as itself, and the list is not reported."""
    dispatcher, keys, _ = setup

    def refused(*_: Any) -> Any:
        raise redis.ResponseError("NOPERM User balancer-dispatcher has no permissions to"
                                  " run the 'blmpop' command")

    dispatcher._wake_wire.call = refused
    with pytest.raises(redis.ResponseError, match="NOPERM"):
        dispatcher._signals(0.1)
    assert fake.hlen(keys.aside) == 0


def test_a_fixed_key_of_another_type_is_reported_until_fixed_and_dispatching_goes_on(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    """The dlq set to a string by a Redis writer: reported as set aside (status, the
    dashboard, /metrics), tasks still dispatched, and the report cleared once fixed."""
    dispatcher, keys, _ = setup
    fake.set(keys.dlq, "not a sorted set")
    dispatcher._key_types_at = 0.0
    submit(fake, settings, 1)
    settle(dispatcher)
    assert len(inbox(fake, keys)) == 1
    [row] = [Aside.from_blob(b) for b in fake.hvals(keys.aside)]
    assert row.key == keys.dlq and "holds a string, not a zset" in row.detail
    assert f"redis-cli DEL {keys.dlq}" in row.detail
    fake.delete(keys.dlq)
    dispatcher._key_types_at = 0.0
    settle(dispatcher)
    assert fake.hlen(keys.aside) == 0


@pytest.mark.parametrize("forged", [
    {"capacity": "many"}, {"beat_s": float("nan")}, {"beat_s": "1"}, {"queues": [1]},
    {"durations": {"default": -1.0}}, {"pressure": float("inf")}])
def test_a_heartbeat_report_of_the_wrong_kinds_is_ignored_and_dispatch_goes_on(
        fake: redis.Redis, settings: Settings, setup: Any, forged: dict[str, Any]) -> None:
    """A report written by hand (or by a writer that means harm) with a field the
    dispatcher computes with at every round: refused where it is read, not failing the
    rounds after it."""
    dispatcher, keys, _ = setup
    settle(dispatcher)
    report = {**dataclasses.asdict(WorkerInfo("forged", ("default",), 1)), **forged}
    Scripts(fake, keys).heartbeat("forged", codec.pack(report), 60_000)
    submit(fake, settings, 3)
    settle(dispatcher, 10)
    assert len(inbox(fake, keys)) == 3  # all to the worker whose report reads
    assert WorkerInfo.readable(codec.pack(report)) is None


def test_a_submit_to_a_new_queue_reads_that_queues_config_and_head_alone(
        fake: redis.Redis, settings: Settings, setup: Any) -> None:
    """A queue per tenant: the first submit to one costs a read of its config and of its
    head, not of every queue's (the full refresh stays on its period)."""
    dispatcher, keys, reads = setup
    with_solo(fake, settings, setup)
    refreshed_at = dispatcher._configs_at
    assert "one" not in dispatcher.queue_names and "default" in dispatcher.state.empty
    submit_one(fake, settings, keys)
    dispatcher.step()
    assert "one" in dispatcher.queue_names and dispatcher._configs_at == refreshed_at
    assert reads == [keys.queue("one")]
    assert fake.llen(keys.inbox("solo")) == 1


def test_the_leader_of_partition_0_stores_its_stamp_for_clients_and_no_other_does(
        fake: redis.Redis, settings: Settings) -> None:
    keys = Keys(settings.namespace)
    assert Dispatcher(fake, settings, partition=1, count=2)._lead()
    assert not fake.exists(keys.protocol)
    assert Dispatcher(fake, settings, count=2)._lead()
    assert fake.get(keys.protocol) == protocol.stamp().encode()


def test_the_leader_of_partition_0_writes_a_spoiled_stamp_again_at_its_renewal(
        fake: redis.Redis, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    keys = Keys(settings.namespace)
    leader = Dispatcher(fake, settings)
    assert leader._lead()
    fake.set(keys.protocol, b"999|9.9.9")  # a forged stamp: clients would refuse
    leader._renew_at = 0.0  # its next renewal is due
    with caplog.at_level(logging.WARNING, logger="balancer.dispatcher"):
        assert leader._lead()
    assert fake.get(keys.protocol) == protocol.stamp().encode()
    assert "the protocol stamp read '999|9.9.9'" in caplog.text
