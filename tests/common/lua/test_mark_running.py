"""mark_running.lua: a worker marks its long runs, where it still holds their lease."""

from __future__ import annotations

from balancer.common.scripts import LeasedTask

from tests.common.lua.db import Db, Q, W


def test_mark_running_marks_only_tasks_whose_lease_is_still_held(db: Db) -> None:
    for t in ("held", "done", "moved"):
        db.put_task(t)
    tokens = db.lease("held", "done", "moved")
    assert db.ack("done", tokens["done"])
    assert db.scripts.release(W, [LeasedTask("moved", Q, tokens["moved"])]) == 1
    db.register("w2")
    theirs = db.lease("moved", worker="w2", prefix="1.2")["moved"]
    done = db.task("done")

    marked = db.scripts.mark_running(W, [(t, tokens[t]) for t in ("held", "done", "moved")])
    assert marked == 1
    held = db.task("held")
    assert (held["state"], held["worker"], held["lease"]) == ("running", W, tokens["held"])
    assert db.task("done") == done
    moved = db.task("moved")  # leased to w2, not yet marked: untouched
    assert moved["state"] == "queued"
    assert "worker" not in moved
    assert "lease" not in moved
    assert db.leases("w2") == {f"moved|{theirs}"}


def test_mark_running_refuses_a_token_or_worker_that_does_not_hold_the_lease(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    record = db.task("a")
    assert db.scripts.mark_running(W, [("a", "1.1.9")]) == 0
    assert db.scripts.mark_running("w2", [("a", token)]) == 0
    assert db.task("a") == record
    assert db.scripts.mark_running(W, [("a", token)]) == 1
    marked = db.task("a")
    assert (marked["state"], marked["worker"], marked["lease"]) == ("running", W, token)
    assert db.leases() == {f"a|{token}"}  # marking does not touch the lease
