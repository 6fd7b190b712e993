"""submit_small.lua: a small submit writes its flow and tasks, and takes the
queue's standing offer when it still holds.
"""

from __future__ import annotations

import pytest
from balancer.common import codec, signals

from balancer.scheduling import CPU_WEIGHT, WorkerView, load
from tests.common.lua.db import FLOW, GRACE, Db, Q, W

REFUSED = "S|q|a"  # the signal the submit would have sent: the dispatcher leases instead


def submit(db: Db, *task_ids: str, offer: signals.Offer | None, raw: bytes | None = None,
           timeout: float | str = "") -> tuple[str, bytes | None]:
    """A small submit of ``task_ids`` (ready, in Q), taking ``offer``, as
    balancer/submit.py makes it: (the worker they were leased to or '', the offer now)."""
    flow = {"id": FLOW, "name": "flow", "state": "running", "total": len(task_ids),
            "remaining": len(task_ids), "failed": 0}
    tasks = [(t, 1000.0 + i, {"name": f"name-{t}", "fn": "tests.tasks:fn", "flow": FLOW,
                              "queue": Q, "score": 1000.0 + i, "args": codec.pack([[1], {}]),
                              "state": "queued", "timeout": timeout})
             for i, t in enumerate(task_ids)]
    signal = "S|q|" + ",".join(task_ids)
    if offer is None:
        return db.scripts.submit_small(FLOW, flow, Q, tasks, 1, 1000, signal)
    return db.scripts.submit_small(FLOW, flow, Q, tasks, 1, 1000, signal, offer,
                                   offer.encode() if raw is None else raw, "1.x9u", GRACE)


def take(db: Db, *task_ids: str, offer: signals.Offer | None = None,
         timeout: float | str = "") -> int:
    """How many of ``task_ids`` a small submit taking ``offer`` leased to W (0: refused)."""
    offer = offer or signals.Offer(db.leader.split("|")[0], ((W, 4, 0.0, 4),))
    worker, _ = submit(db, *task_ids, offer=offer, timeout=timeout)
    return len(task_ids) if worker == W else 0 if worker == "" else -1


def stand(db: Db, offer: signals.Offer | None = None) -> signals.Offer:
    offer = offer or signals.Offer(db.leader.split("|")[0], ((W, 4, 0.0, 4),))
    db.client.set(db.keys.offer(Q), offer.encode())
    return offer


def offer_to(db: Db, *workers: tuple[str, int, float, int], tasks: str = "ab") -> str:
    """Submit ``tasks`` taking an offer of ``workers``; the worker they went to."""
    offer = stand(db, signals.Offer(db.leader.split("|")[0], workers))
    worker, _ = submit(db, *tasks, offer=offer)
    return worker


def test_a_submit_takes_a_standing_offer_and_leases_to_the_offered_worker(db: Db) -> None:
    offer = stand(db)
    assert take(db, "a", timeout=3) == 1
    assert db.queued() == {}
    [lease] = db.inbox()
    assert (lease.task_id, lease.queue, lease.fn, lease.timeout) == ("a", Q, "tests.tasks:fn", 3.0)
    assert db.leases() == {f"a|{lease.token}"}
    assert db.deadline("a", lease.token) is not None
    assert db.inflight() is None  # an offered queue has no limit: nothing counted
    assert db.wake() == [f"l|{W}|1"]  # the deadline to watch; the queue is still empty
    assert db.state("a") == "queued" and db.client.zscore(db.keys.flows, FLOW) == 1
    assert submit(db, "b", offer=None) == ("", offer.encode())  # the offer, for next time


def test_a_small_submit_trims_the_recent_flows_only_when_told(db: Db) -> None:
    db.client.zadd(db.keys.flows, {f"old{i}": i for i in range(5)})
    flow = {"id": FLOW, "name": "flow", "state": "running", "total": 0, "remaining": 0}
    db.scripts.submit_small(FLOW, flow, Q, [], 10, 0, "S|q|")
    assert db.client.zcard(db.keys.flows) == 6  # 0: left for a later submit to trim
    db.scripts.submit_small("f2", {**flow, "id": "f2"}, Q, [], 11, 3, "S|q|")
    assert db.client.zrange(db.keys.flows, 0, -1) == [b"old4", FLOW.encode(), b"f2"]


def test_a_submit_without_an_offer_queues_its_tasks_and_signals_the_dispatcher(
        db: Db) -> None:
    assert submit(db, "a", "b", offer=None) == ("", None)
    assert db.queued() == {"a": 1000.0, "b": 1001.0}
    assert db.wake() == ["S|q|a,b"]
    assert db.client.hget(db.keys.flow(FLOW), "remaining") == b"2"


@pytest.mark.parametrize("spoil", [
    "offer replaced", "old leader", "worker reaped", "worker full", "queue not empty",
    "other queue waiting", "queue paused", "queue limited"])
def test_an_offer_is_refused_when_the_lease_would_be_wrong(db: Db, spoil: str) -> None:
    offer = stand(db, signals.Offer(db.leader.split("|")[0], ((W, 4, 0.0, 4),), ("hi",)))
    if spoil == "offer replaced":
        stand(db, signals.Offer(offer.epoch, (("w2", 4, 0.0, 4),)))
    elif spoil == "old leader":
        db.client.set(db.keys.leader, "99|dispatcher-2")
    elif spoil == "worker reaped":
        db.client.zrem(db.keys.workers, W)
    elif spoil == "worker full":
        db.client.sadd(db.keys.leases(W), *[f"x{i}|t" for i in range(4)])
    elif spoil == "queue not empty":
        db.put_task("older", score=1.0)
    elif spoil == "other queue waiting":
        db.put_task("urgent", queue="hi")
    elif spoil == "queue paused":
        db.client.hset(db.keys.queue_conf(Q), "paused", "1")
    elif spoil == "queue limited":
        db.client.hset(db.keys.queue_conf(Q), "concurrency_limit", "2")
    assert take(db, "a", offer=offer) == 0
    assert "a" in db.queued()
    assert db.client.lrange(db.keys.inbox(W), 0, -1) == []
    assert db.wake()[-1] == REFUSED


def test_an_offer_with_more_tasks_than_free_slots_is_refused_whole(db: Db) -> None:
    stand(db)
    assert take(db, *"abcde") == 0
    assert sorted(db.queued()) == list("abcde")


def test_an_offer_leases_to_a_live_offered_worker_with_free_slots(db: Db) -> None:
    db.register("w2")
    db.client.delete(db.keys.wake)
    db.client.sadd(db.keys.leases(W), "busy|t")  # W's only slot is taken
    assert offer_to(db, (W, 1, 0.0, 1), ("gone", 4, 0.0, 4), ("w2", 2, 0.0, 2)) == "w2"
    assert sorted(lease.task_id for lease in db.inbox("w2")) == ["a", "b"]
    assert db.wake() == []  # no deadline: the dispatcher learns the count at the next ack


@pytest.mark.parametrize(("w2_host", "chosen"), [(0.3, "w2"), (0.6, W)])
def test_an_offer_leases_to_the_least_loaded_as_the_dispatcher_weighs_load(
        db: Db, w2_host: float, chosen: str) -> None:
    db.register("w2")
    db.client.sadd(db.keys.leases(W), "x|t", "y|t")  # W: 2 of 4 slots taken, a free host
    views = [WorkerView(W, frozenset({Q}), 4, 2), WorkerView("w2", frozenset({Q}), 4, 0)]
    views[1].cpu = w2_host / CPU_WEIGHT
    assert min(views, key=load).id == chosen  # what the dispatcher itself would choose
    assert offer_to(db, (W, 4, 0.0, 4), ("w2", 4, w2_host, 4), tasks="a") == chosen


def test_each_submit_takes_the_offer_it_was_given_after_another_was_taken(db: Db) -> None:
    """Scripts builds an offer's keys and arguments once and reuses them while it is the
    same offer: a new one (here naming another worker) is taken with its own."""
    db.register("w2")
    epoch = db.leader.split("|")[0]
    assert offer_to(db, (W, 4, 0.0, 4), tasks="a") == W
    assert offer_to(db, (W, 4, 0.0, 4), tasks="b") == W  # an equal offer, read again
    assert offer_to(db, ("w2", 4, 0.0, 4), tasks="c") == "w2"
    offer = stand(db, signals.Offer(epoch, ((W, 4, 0.0, 4),)))
    assert submit(db, "d", offer=offer)[0] == W
    assert submit(db, "e", offer=offer)[0] == W  # the very same offer, reused
    assert sorted(lease.task_id for lease in db.inbox(W)) == ["a", "b", "d", "e"]
    assert [lease.task_id for lease in db.inbox("w2")] == ["c"]


def test_an_offer_counts_no_worker_that_could_not_beat_the_best_counted(db: Db) -> None:
    """Workers are counted in the order of their host's load, the least a worker's load can
    be: a free worker first ends the counting. w2's leases key here is no set, so counting
    it would fail the script."""
    db.register("w2")
    db.client.set(db.keys.leases("w2"), "not a set")
    assert offer_to(db, (W, 4, 0.0, 4), ("w2", 4, 0.0, 4), tasks="a") == W  # a tie: offered first
    assert offer_to(db, ("w2", 4, 0.5, 4), (W, 4, 0.0, 4), tasks="b") == W  # 0.25 < 0.5
    db.client.delete(db.keys.leases("w2"))
    db.client.sadd(db.keys.leases(W), "x|t")  # W: 3 of 4 taken, 0.75
    assert offer_to(db, (W, 4, 0.0, 4), ("w2", 4, 0.5, 4), tasks="c") == "w2"


def test_a_single_task_takes_a_place_behind_a_busy_worker_s_running_task(db: Db) -> None:
    """With prefetch the offer gives places beyond the slots: the one task of a submit is
    leased behind what the worker runs, as the dispatcher would lease it, instead of going
    through the dispatcher. Its entry carries the queue's depth, so that the child takes
    what waits behind in batches; a lease into a free slot carries none (the child acks
    it with its next blocking fetch, one round trip)."""
    offer = stand(db, signals.Offer(db.leader.split("|")[0], ((W, 1, 0.0, 3),), (), 4))
    assert submit(db, "free", offer=offer)[0] == W  # into W's one slot
    assert submit(db, "a", offer=offer)[0] == W
    assert submit(db, "b", offer=offer)[0] == W
    assert submit(db, "c", offer=offer)[0] == ""  # its 3 places are taken
    assert [(lease.task_id, lease.depth) for lease in db.inbox(W)] == [
        ("free", 1), ("a", 4), ("b", 4)]
    assert list(db.queued()) == ["c"] and db.wake()[-1] == "S|q|c"


def test_several_tasks_still_need_a_free_slot_each_whatever_the_places(db: Db) -> None:
    """On one worker they would run one after another while another may be free."""
    offer = stand(db, signals.Offer(db.leader.split("|")[0], ((W, 1, 0.0, 8),), (), 8))
    assert submit(db, "a", "b", offer=offer)[0] == ""
    assert sorted(db.queued()) == ["a", "b"]


def test_a_free_slot_anywhere_goes_before_a_place_behind_a_running_task(db: Db) -> None:
    db.register("w2")
    db.client.sadd(db.keys.leases(W), "running|t")
    assert offer_to(db, (W, 1, 0.0, 32), ("w2", 1, 0.0, 32), tasks="a") == "w2"
    assert offer_to(db, (W, 1, 0.0, 32), ("w2", 1, 0.0, 32), tasks="b") == W  # a tie now


def test_a_submit_queued_behind_a_backlog_the_dispatcher_keeps_wakes_it_not(db: Db) -> None:
    """The dispatcher set the queue's backlog key: it knows the queue holds tasks no worker
    has room for, and the room freed will wake it. Without the key, the submit signals."""
    db.client.set(db.keys.backlog(Q), 1)
    assert submit(db, "a", offer=None) == ("", None)
    assert db.queued() == {"a": 1000.0} and db.wake() == []
    db.client.delete(db.keys.backlog(Q))
    assert submit(db, "b", offer=None) == ("", None)
    assert db.wake() == ["S|q|b"]
