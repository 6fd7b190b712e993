"""name_run.lua: a worker records a run's own name (task_run_name) where it still holds
the lease, and never makes a record again."""

from __future__ import annotations

from tests.common.lua.db import Db, W


def test_name_run_names_a_run_whose_lease_is_held(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]

    assert db.scripts.name_run(W, "a", token, "fetch-example.com") is True
    record = db.task("a")
    assert record["run_name"] == "fetch-example.com"
    assert record["state"] == "queued"  # only the name: marking is mark_running's
    assert db.leases() == {f"a|{token}"}


def test_name_run_writes_nothing_without_the_lease(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    before = db.task("a")

    assert db.scripts.name_run(W, "a", "1.1.9", "forged") is False  # another token
    assert db.scripts.name_run("w2", "a", token, "forged") is False  # another worker
    assert db.task("a") == before
    assert db.ack("a", token)
    assert db.scripts.name_run(W, "a", token, "late") is False  # settled: lease gone
    assert "run_name" not in db.task("a")


def test_name_run_does_not_make_a_deleted_record_again(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    db.client.delete(db.keys.task("a"))  # deleted by hand while its lease holds

    assert db.scripts.name_run(W, "a", token, "x") is False
    assert db.client.exists(db.keys.task("a")) == 0  # no record without an expiry
