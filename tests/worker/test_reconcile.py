"""The reconciler (worker/reconcile.py): a lease Redis holds for this worker that no slot
knows (neither in the inbox nor running) is handed back, but only once two passes in a
row found it so; what waits in the inbox or runs is kept."""

from __future__ import annotations

import threading

from balancer.worker.reconcile import Reconciler

from tests.common.lua.db import Db, W


def reconciler(db: Db, running: set[str]) -> Reconciler:
    return Reconciler(W, db.client, db.scripts, held=lambda: set(running),
                      leased=lambda: len(db.leases()), stopping=threading.Event())


def test_a_lease_no_slot_knows_is_handed_back_on_the_second_pass_only(db: Db) -> None:
    for t in "abc":
        db.put_task(t, score=float(ord(t)))
    tokens = db.lease("a", "b", "c")
    db.scripts.take(W, 2)  # "a" runs; "b" was popped but its reply was lost
    running = {"a"}
    r = reconciler(db, running)
    assert r.pass_once() == 0  # "b" may have been popped a moment ago
    assert db.leases() == {f"{t}|{tokens[t]}" for t in "abc"}
    assert r.pass_once() == 1
    assert db.queued() == {"b": float(ord("b"))}
    assert db.leases() == {f"a|{tokens['a']}", f"c|{tokens['c']}"}  # running, in the inbox
    assert [lease.task_id for lease in db.inbox()] == ["c"]
    assert r.pass_once() == 0


def test_a_lease_missing_on_one_pass_and_running_on_the_next_is_kept(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    db.scripts.take(W, 1)  # taken, not yet started
    running: set[str] = set()
    r = reconciler(db, running)
    assert r.pass_once() == 0
    running.add("a")  # the slot started it
    assert r.pass_once() == 0
    running.clear()  # and it is still missing once more: a new first sighting
    assert r.pass_once() == 0
    assert db.leases() == {f"a|{token}"}
    assert db.queued() == {}
