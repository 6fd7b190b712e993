"""flow_extend.lua, flow_release.lua and flow_close.lua: a @flow function's open run gets
tasks while it runs, keeps its counts right, and settles only once it is closed."""

from __future__ import annotations

from balancer.common import codec
from balancer.common.scripts import AddedTask

from tests.common.lua.db import FLOW, TTL, Db, Q, strings


def _open(db: Db) -> None:
    db.client.hset(db.keys.flow(FLOW), mapping={
        "id": FLOW, "name": "dyn", "state": "running", "total": 0, "remaining": 1,
        "failed": 0, "open": 1})


def _added(task_id: str, score: float | None) -> AddedTask:
    fields = {"name": task_id, "fn": "m:f", "flow": FLOW, "queue": Q, "score": 7.0,
              "args": codec.pack([[], {}]), "state": "pending" if score is None else "queued"}
    if score is None:
        fields["deps"] = 1
    return AddedTask(task_id, Q, score, codec.pack([task_id, task_id, "task"]), fields)


def test_extend_adds_tasks_counts_lists_and_queues_the_ready_ones(db: Db) -> None:
    _open(db)
    assert db.scripts.flow_extend(FLOW, [_added("a", 7.0), _added("b", None)], "s|q") == 2
    assert (db.flow("total"), db.flow("remaining"), db.flow("state")) == ("2", "3", "running")
    assert db.queued() == {"a": 7.0}
    assert db.state("b") == "pending"
    assert [codec.unpack(e)[0] for e in db.client.lrange(db.keys.flow_tasks(FLOW), 0, -1)] == [
        "a", "b"]
    assert db.wake() == ["s|q"]
    assert db.client.sismember(db.keys.queues, Q)


def test_extend_refuses_a_run_that_is_not_open_and_writes_nothing(db: Db) -> None:
    db.put_flow(1)  # a flow submitted whole: never open
    assert db.scripts.flow_extend(FLOW, [_added("a", 7.0)], "s|q") == -1
    assert not db.client.exists(db.keys.task("a"))
    assert db.flow("total") == "1" and db.queued() == {}


def test_release_queues_once_or_fails_the_task_as_upstream_failed(db: Db) -> None:
    _open(db)
    db.scripts.flow_extend(FLOW, [_added("b", None), _added("c", None)], "s|q")
    db.client.delete(db.keys.wake)
    assert db.scripts.flow_release("b", Q, 7.0, FLOW, TTL, b"", "s|q") == 1
    assert db.queued() == {"b": 7.0} and db.task("b")["deps"] == "0"
    assert db.scripts.flow_release("b", Q, 7.0, FLOW, TTL, b"", "s|q") == 0  # once
    assert db.wake() == ["s|q"]
    assert db.scripts.flow_release("c", Q, 7.0, FLOW, TTL, b"upstream failed", "s|q") == 2
    assert (db.state("c"), db.task("c")["error"]) == ("upstream_failed", "upstream failed")
    assert (db.flow("remaining"), db.flow("failed"), db.flow("state")) == ("2", "1", "running")
    assert db.scripts.flow_release("c", Q, 7.0, FLOW, TTL, b"", "s|q") == 0


def test_close_settles_in_the_functions_outcome_when_nothing_remains(db: Db) -> None:
    _open(db)
    db.scripts.flow_extend(FLOW, [_added("c", None)], "s|q")
    db.scripts.flow_release("c", Q, 7.0, FLOW, TTL, b"upstream failed", "s|q")
    # a task failed, the function went on and returned: the run completed (Prefect 3)
    assert db.scripts.flow_close(FLOW, "completed", TTL, b"") == 1
    assert (db.flow("state"), db.flow("open"), db.flow("remaining")) == ("completed", "0", "0")
    assert strings(db.client.lrange(db.keys.flow_done(FLOW), 0, -1)) == ["completed"]
    assert 0 < db.client.pttl(db.keys.flow(FLOW)) <= TTL
    assert 0 < db.client.pttl(db.keys.flow_tasks(FLOW)) <= TTL
    assert db.scripts.flow_close(FLOW, "failed", TTL, b"") == 0  # closed once
    assert db.flow("state") == "completed"


def test_a_run_closed_with_tasks_left_settles_with_its_last_task(db: Db) -> None:
    _open(db)
    db.scripts.flow_extend(FLOW, [_added("a", 7.0)], "s|q")
    assert db.scripts.flow_close(FLOW, "failed", TTL, codec.pack_error(
        codec.ErrorInfo("KeyError", "x"))) == 2
    assert (db.flow("state"), db.flow("remaining")) == ("running", "1")
    [token] = db.lease("a").values()
    assert db.ack("a", token)
    assert db.flow("state") == "failed"  # the function failed: counted in failed
    assert strings(db.client.lrange(db.keys.flow_done(FLOW), 0, -1)) == ["failed"]


def test_an_open_run_is_not_settled_by_its_tasks_finishing(db: Db) -> None:
    _open(db)
    db.scripts.flow_extend(FLOW, [_added("a", 7.0)], "s|q")
    [token] = db.lease("a").values()
    assert db.ack("a", token)
    assert (db.flow("state"), db.flow("remaining")) == ("running", "1")
    assert not db.client.exists(db.keys.flow_done(FLOW))


def test_a_queue_of_another_type_parks_what_a_flow_function_adds_or_releases(db: Db) -> None:
    """The tasks are written and counted whole, and those ready wait in the delayed set
    (promote.lua queues them once the key is fixed) instead of the script stopping after
    the first record, with tasks in no queue."""
    _open(db)
    db.client.set(db.keys.queue(Q), "a string, not a queue")
    assert db.scripts.flow_extend(FLOW, [_added("a", 7.0), _added("b", None)], "s|q") == 2
    assert (db.flow("total"), db.flow("remaining")) == ("2", "3")
    assert db.scripts.flow_release("b", Q, 7.0, FLOW, TTL, b"", "s|q") == 1
    assert sorted(strings(db.client.zrange(db.keys.delayed, 0, -1))) == ["a", "b"]
    assert "r" in db.wake()
