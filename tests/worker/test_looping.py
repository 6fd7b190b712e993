"""A looping run's progress kept on its task (loop.lua, fenced by the lease) and read back
by the run after it, and its lease's deadline pushed out by each iteration (fakeredis,
the scripts as Redis runs them)."""

from __future__ import annotations

from typing import Any

from balancer.common import codec
from balancer.common.runsignals import LOOP
from balancer.common.signals import Lease
from balancer.common.signing import signer
from balancer.worker import runfacts
from balancer.worker.looping import LoopStore

from balancer.runcontext import NO_LOOP_RESULT, RunFacts
from tests.common.lua.db import GRACE, Db, W


def _store(db: Db, token: str, timeout: float | None = None, signed: bool = False,
           max_bytes: int = 1 << 20) -> LoopStore:
    lease = Lease("a", token, "q", "f1", timeout, "tests.tasks:fn", "a", b"", b"")
    return LoopStore(db.scripts, signer("k1") if signed else None, W, lease, GRACE,
                     max_bytes)


def _facts(db: Db, store: LoopStore) -> RunFacts:
    return runfacts.facts(store.lease, W, db.client, db.keys, loop_store=store)


def test_a_run_s_loop_goes_on_where_an_earlier_run_of_the_task_left_it(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", timeout=5)
    token = db.lease("a")["a"]
    first = _facts(db, _store(db, token))
    assert first.loop_state() == (1, NO_LOOP_RESULT)
    assert first.looped({"page": 1}) == 2 and first.looped({"page": 2}) == 3
    # The next run of the task (its retry) reads where the loop got to.
    assert _facts(db, _store(db, token)).loop_state() == (3, {"page": 2})


def test_each_iteration_pushes_the_lease_s_deadline_and_a_lease_moved_on_writes_nothing(
        db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", timeout=5)
    token = db.lease("a")["a"]
    member = f"a|{W}|{token}"
    before = db.client.zscore(db.keys.deadlines, member)
    assert before is not None
    db.client.zadd(db.keys.deadlines, {member: 1})  # as if its first timeout had passed
    _store(db, token, timeout=5).save(2, "x")
    pushed = db.client.zscore(db.keys.deadlines, member)
    assert pushed is not None and pushed >= before  # now + timeout + grace
    db.client.delete(db.keys.task("a"))
    _store(db, token, timeout=5).save(3, "y")  # no record: nothing made again
    assert not db.client.exists(db.keys.task("a"))
    db.put_task("a", timeout=5)
    _store(db, "another-token").save(3, "y")  # not this worker's lease
    assert db.client.hget(db.keys.task("a"), "loop") is None


def test_with_signing_keys_progress_no_key_signed_starts_the_loop_over(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    token = db.lease("a")["a"]
    _store(db, token, signed=True).save(4, [1, 2, 3])
    assert _store(db, token, signed=True).load(
        db.client.hget(db.keys.task("a"), "loop")) == (4, [1, 2, 3])
    planted = codec.pack([codec.pack([9, "planted"]), "0" * 64])
    assert _store(db, token, signed=True).load(planted) is None
    # Another task's signed progress copied onto this one does not verify either.
    other = Lease("b", token, "q", "f1", None, "tests.tasks:fn", "b", b"", b"")
    copied = db.client.hget(db.keys.task("a"), "loop")
    assert LoopStore(db.scripts, signer("k1"), W, other, GRACE, 1 << 20).load(copied) is None


def test_a_loop_with_no_result_is_kept_as_the_signal_it_carried(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    token = db.lease("a")["a"]
    _store(db, token).save(2, LOOP("round 1"))
    count, result = _facts(db, _store(db, token)).loop_state()
    assert count == 2 and isinstance(result, LOOP) and result.message == "round 1"


def test_a_result_that_cannot_be_kept_makes_a_retry_start_the_loop_over(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    token = db.lease("a")["a"]
    _store(db, token).save(2, "ok")
    _store(db, token).save(3, object())  # not msgpack
    raw: Any = db.client.hget(db.keys.task("a"), "loop")
    assert _store(db, token).load(raw) is None
    _store(db, token, max_bytes=10).save(4, "x" * 100)  # over the payload limit
    assert _store(db, token).load(db.client.hget(db.keys.task("a"), "loop")) is None
    assert _store(db, token).load(b"\xff") is None  # unreadable: started over, logged
