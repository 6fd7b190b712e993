"""Tag limits in the scripts: a lease assign.lua counts against tags ("t" in its token,
``tag-inflight`` up, the task record's ``tagged``) gives its places back exactly once on
every path that ends it (ack, fail, the deadline's fail, reap, cancel, release), and a
fenced call (a late ack, a replayed failure) gives back nothing. A small submit never
takes an offer for a task with a limited tag."""

from __future__ import annotations

from balancer.common import codec, protocol, signals
from balancer.common.scripts import FAIL_REFUSED, CancelTask, Done, LeasedTask

from balancer.cancel import cancel_flow
from tests.common.lua.db import FINISHED, FLOW, GRACE, PREFIX, STARTED, TTL, Db, Q, W


def lease_tagged(db: Db, tags: dict[str, str], *, prefix: str = PREFIX) -> dict[str, str]:
    """Assign every id of ``tags`` to W, each counted against its tags ('' none), as the
    dispatcher does once ``scheduling.admit_tagged`` let them go: {id: token}."""
    held = db.leases()
    n, *_ = db.scripts.assign(db.leader, W, Q, 10, GRACE, prefix, list(tags),
                              tags=list(tags.values()))
    assert n == len(tags)
    added = [signals.parse_lease_member(m.encode()) for m in db.leases() - held]
    return dict(pair for pair in added if pair is not None)


def counts(db: Db) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in db.client.hgetall(db.keys.tag_inflight).items()}


def test_a_counted_lease_raises_its_tags_and_says_so_in_its_token(db: Db) -> None:
    for t in ("a", "b", "c"):
        db.put_task(t)
    tokens = lease_tagged(db, {"a": "db", "b": "db,gpu", "c": ""})
    assert counts(db) == {"db": 2, "gpu": 1}
    assert protocol.is_tagged(tokens["a"]) and protocol.is_tagged(tokens["b"])
    assert not protocol.is_tagged(tokens["c"])
    assert db.task("b")["tagged"] == f"{tokens['b']}|db,gpu"
    assert "tagged" not in db.task("c")
    assert [lease.token for lease in db.inbox()] == [tokens[t] for t in "abc"]


def test_leases_without_counted_tags_touch_nothing_of_tags(db: Db) -> None:
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")  # no tags argument: every lease while no tag has a limit
    assert not db.client.exists(db.keys.tag_inflight)
    assert not any(protocol.is_tagged(t) for t in tokens.values())
    db.put_flow(2)
    assert db.ack("a", tokens["a"])
    assert not db.client.exists(db.keys.tag_inflight)


def test_an_ack_gives_the_places_back_once_and_a_replay_gives_nothing(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = lease_tagged(db, {"a": "db,gpu", "b": "db"})
    assert db.ack("a", tokens["a"])
    assert counts(db) == {"db": 1}  # a tag at 0 leaves the hash
    assert "tagged" not in db.task("a")
    assert db.ack("a", tokens["a"])  # the same call again (a lost reply): same answer
    assert counts(db) == {"db": 1}


def test_an_ack_of_a_tag_counted_lease_always_signals(db: Db) -> None:
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t)
    tokens = lease_tagged(db, {"a": "db", "b": "", "c": "", "d": ""})
    db.client.delete(db.keys.wake)
    done = [Done("b", tokens["b"], Q, FLOW, STARTED, b"")]
    db.scripts.ack(W, done, TTL, FINISHED, quiet_above=1)  # 3 held: quiet
    assert db.wake() == []
    done = [Done("a", tokens["a"], Q, FLOW, STARTED, b"")]
    db.scripts.ack(W, done, TTL, FINISHED, quiet_above=1)  # 2 held, but "db" has room now
    assert db.wake() == [f"k|{W}|2"]


def test_a_late_ack_of_a_lease_taken_back_gives_nothing_back(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    old = lease_tagged(db, {"a": "db"})["a"]
    assert db.reap(LeasedTask("a", Q, old)) == (1, 0)
    assert counts(db) == {}
    new = lease_tagged(db, {"a": "db"}, prefix="1.2")["a"]
    assert counts(db) == {"db": 1}
    assert not db.ack("a", old)  # fenced: the lease moved on
    assert counts(db) == {"db": 1}  # the new lease's place stays taken
    assert db.task("a")["tagged"] == f"{new}|db"
    assert db.ack("a", new)
    assert counts(db) == {}


def test_a_failure_retried_or_final_gives_the_places_back_once(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", retries=1)
    db.put_task("b")
    tokens = lease_tagged(db, {"a": "db", "b": "db"})
    assert db.fail("a", tokens["a"]) == 2  # retry scheduled
    assert counts(db) == {"db": 1}
    assert db.fail("a", tokens["a"]) == 2  # a replay answers the same, gives nothing
    assert counts(db) == {"db": 1}
    assert db.fail("b", tokens["b"], "final") == 1
    assert counts(db) == {}
    assert db.fail("b", tokens["b"], "final") == 1
    assert counts(db) == {}


def test_a_deadline_expired_by_the_dispatcher_gives_the_place_back(db: Db) -> None:
    # Upkeep.expire_overdue fails the lease with fail.lua under the worker's id and token.
    db.put_flow(1)
    db.put_task("a", timeout=1, retries=1)
    token = lease_tagged(db, {"a": "db"})["a"]
    assert db.deadline("a", token) is not None
    assert db.fail("a", token) == 2
    assert counts(db) == {}
    assert db.fail("a", token) == 2  # the worker's own late failure: refused by the fence
    assert counts(db) == {}


def test_reaping_a_dead_worker_gives_back_started_and_unstarted_leases(db: Db) -> None:
    db.put_task("a")
    db.put_task("b")
    db.put_task("c")
    tokens = lease_tagged(db, {"a": "db", "b": "db,gpu", "c": ""})
    assert db.reap(LeasedTask("a", Q, tokens["a"], started=True),
                   LeasedTask("b", Q, tokens["b"]),
                   LeasedTask("c", Q, tokens["c"], started=True)) == (3, 0)
    assert counts(db) == {}
    assert sorted(db.queued()) == ["a", "b", "c"]


def test_a_quarantined_task_of_a_dead_worker_gives_its_place_back(db: Db) -> None:
    db.put_task("a", lost=2)
    token = lease_tagged(db, {"a": "db"})["a"]
    assert db.reap(LeasedTask("a", Q, token, started=True)) == (0, 1)
    assert db.state("a") == "dead"
    assert counts(db) == {}


def test_a_release_gives_back_what_it_hands_back_only(db: Db) -> None:
    db.put_task("a", score=1.0)
    db.put_task("b", score=2.0)
    tokens = lease_tagged(db, {"a": "db", "b": "db"})
    [first, second] = db.inbox()
    db.client.lrem(db.keys.inbox(W), 1, second.raw)  # a slot took b meanwhile
    released = db.scripts.release(W, [LeasedTask("a", Q, tokens["a"], inbox_entry=first.raw),
                                      LeasedTask("b", Q, tokens["b"], inbox_entry=second.raw)])
    assert released == 1
    assert counts(db) == {"db": 1}  # b runs: its place stays taken
    assert db.scripts.release(W, [LeasedTask("a", Q, tokens["a"])]) == 0
    assert counts(db) == {"db": 1}


def test_a_cancel_gives_back_the_places_of_leased_tasks_once(db: Db) -> None:
    db.put_flow(3)
    db.put_task("a")
    db.put_task("b")
    db.put_task("q1")  # queued, never leased: nothing to give back
    tokens = lease_tagged(db, {"a": "db", "b": "db"})
    db.client.hset(db.keys.flow(FLOW), "tasks", codec.pack([[t, t] for t in ("a", "b", "q1")]))
    assert cancel_flow(db.client, db.keys, FLOW, TTL).cancelled == 3
    assert counts(db) == {}
    assert not db.ack("a", tokens["a"])  # the worker's late ack: refused, nothing given
    assert db.fail("b", tokens["b"]) == FAIL_REFUSED
    assert counts(db) == {}
    again = db.scripts.cancel(FLOW, [CancelTask("a", Q, tokens["a"], W)], TTL)
    assert again.state == "cancelled" and counts(db) == {}


def _small_submit(db: Db, tags: str) -> str:
    """A one-task small submit of task "s" tagged ``tags``, taking W's standing offer:
    the worker it went to, '' when it was queued for the dispatcher."""
    offer = signals.Offer(db.leader.split("|")[0], ((W, 4, 0.0, 4),))
    db.client.set(db.keys.offer(Q), offer.encode())
    flow = {"id": FLOW, "name": "flow", "state": "running", "total": 1, "remaining": 1,
            "failed": 0}
    fields = {"name": "name-s", "fn": "tests.tasks:fn", "flow": FLOW, "queue": Q,
              "score": 1000.0, "args": codec.pack([[1], {}]), "state": "queued",
              "tags": tags}
    worker, _ = db.scripts.submit_small(FLOW, flow, Q, [("s", 1000.0, fields)], 1, 1000,
                                        "S|q|s", offer, offer.encode(), "1.x9u", GRACE)
    return worker


def test_a_small_submit_takes_no_offer_for_a_task_with_a_limited_tag(db: Db) -> None:
    db.client.hset(db.keys.tag_limits, "db", 2)
    assert _small_submit(db, "io,db") == ""
    assert db.queued() == {"s": 1000.0}  # for the dispatcher, which counts
    assert db.leases() == set()


def test_a_small_submit_with_tags_but_no_limit_on_them_takes_the_offer(db: Db) -> None:
    db.client.hset(db.keys.tag_limits, "db", 2)
    assert _small_submit(db, "io") == W
    assert not db.client.exists(db.keys.tag_inflight)
