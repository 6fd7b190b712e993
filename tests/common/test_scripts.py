"""The Lua state machine (common/lua/*.lua), driven through common.scripts.Scripts on
fakeredis, with task and flow hashes laid out as balancer/submit.py writes them.

The hot path: ``assign`` leases queued tasks into a worker's inbox (each entry carries the
whole spec) and adds ``id|token`` to its leases set. It does not write the task record: the
member is the lease, and a leased task reads "queued" (or "pending", its deps at 0) until
it is marked running or settled; only its absence from the queue tells it is leased. A
task with a timeout also gets the deadline member ``id|worker|token``. The worker pops
entries and runs them, ``mark_running`` marks the long ones, and ``ack``/``fail`` settle
them, writing ``worker`` and ``lease`` on the record. Removing the lease member is the
fencing check, so a late call for a lease that moved on changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from balancer.common import codec, signals
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.protocol import WAKE_CAP
from balancer.common.scripts import (
    FAIL_FAILED,
    FAIL_QUARANTINED,
    FAIL_REFUSED,
    FAIL_RETRIED,
    Child,
    Done,
    FailMode,
    LeasedTask,
    Scripts,
)
from balancer.common.settings import Settings
from balancer.common.signals import Lease

from balancer.scheduling import CPU_WEIGHT, WorkerView, load

Q = "q"
FLOW = "f1"
TTL = 60_000
GRACE = 5_000
POISON = 3
W = "w1"
PREFIX = "1.1"  # lease token prefix, "<leader epoch>.<assign batch>" as the dispatcher builds it
STARTED = 1_700_000_000_000
FINISHED = STARTED + 2_500  # the worker's clock at the ack: far from the server's TIME
NEVER = 1_000_000_000  # the unmet count cascade.lua gives dependents of a failed task


@dataclass
class Db:
    """The scripts on one fakeredis, with the leader lease taken and worker W registered."""

    client: redis.Redis
    keys: Keys
    scripts: Scripts
    leader: str

    # -- records as balancer/submit.py writes them -------------------------------------

    def put_task(
        self,
        task_id: str,
        *,
        state: str = "queued",
        queue: str = Q,
        score: float = 1000.0,
        upstream: int = 0,
        children: Sequence[Child] = (),
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | str = "",
        failures: int = 0,
        lost: int = 0,
        flow: str = FLOW,
    ) -> None:
        """A task hash with the fields balancer/submit.py::_task_record writes."""
        self.client.hset(self.keys.task(task_id), mapping={
            "id": task_id, "name": f"name-{task_id}", "fn": "tests.tasks:fn", "flow": flow,
            "queue": queue, "priority": 0, "score": score, "args": codec.pack([[1], {}]),
            "retries": retries, "retry_delay": retry_delay, "timeout": timeout,
            "state": state, "deps": upstream,
            "children": codec.pack([[c.task_id, c.queue, c.score] for c in children]),
            "nchildren": len(children), "failures": failures, "lost": lost, "created": 1,
        })
        if state == "queued":
            self.client.zadd(self.keys.queue(queue), {task_id: score})

    def put_flow(self, total: int, flow: str = FLOW) -> None:
        self.client.hset(self.keys.flow(flow), mapping={
            "id": flow, "name": "flow", "state": "running", "total": total,
            "remaining": total, "failed": 0})

    # -- script calls with the test's defaults -------------------------------------------

    def lease(self, *task_ids: str, worker: str = W, queue: str = Q, capacity: int = 10,
              prefix: str = PREFIX) -> dict[str, str]:
        """Assign every id to ``worker``; return {task id: lease token}, read off the
        members the call added to the worker's leases set."""
        held = self.leases(worker)
        n, *_ = self.scripts.assign(self.leader, worker, queue, capacity, GRACE, prefix,
                                      task_ids)
        assert n == len(task_ids)
        added = [signals.parse_lease_member(m.encode()) for m in self.leases(worker) - held]
        tokens = dict(pair for pair in added if pair is not None)
        assert sorted(tokens) == sorted(task_ids)
        return tokens

    def join(self) -> tuple[Child, dict[str, str]]:
        """A flow of three: "a" and "b" leased, "c" pending on both (queued at 5.0)."""
        self.put_flow(3)
        child = Child("c", Q, 5.0)
        self.put_task("a", children=[child])
        self.put_task("b", children=[child])
        self.put_task("c", state="pending", upstream=2)
        return child, self.lease("a", "b")

    def ack(self, task_id: str, token: str, *children: Child, worker: str = W,
            result: bytes = b"", queue: str = Q, flow: str = FLOW,
            has_deadline: bool = False, finished_ms: int = FINISHED) -> bool:
        [stored] = self.scripts.ack(worker, [Done(task_id, token, queue, flow, STARTED, result,
                                                  has_deadline, children)], TTL, finished_ms)
        return stored

    def fail(self, task_id: str, token: str, mode: FailMode = "retry", *, worker: str = W,
             error: bytes = b"boom", queue: str = Q) -> int:
        return self.scripts.fail(worker, token, task_id, queue, FLOW, error, mode, TTL, POISON,
                                 STARTED)

    def reap(self, *tasks: LeasedTask, worker: str = W, seen_before_ms: int = 0,
             threshold: int = POISON, leader: str | None = None) -> tuple[int, int]:
        return self.scripts.reap(leader or self.leader, worker, seen_before_ms, threshold,
                                 b"quarantined", tasks)

    def register(self, worker: str) -> None:
        self.scripts.heartbeat(worker, WorkerInfo(worker, (Q,), 4).to_blob(), TTL)

    # -- reads ------------------------------------------------------------------------------

    def field(self, key: str, name: str) -> str | None:
        raw = self.client.hget(key, name)
        return raw.decode() if raw is not None else None

    def task(self, task_id: str) -> dict[str, str]:
        return {k.decode(): v.decode(errors="replace")
                for k, v in self.client.hgetall(self.keys.task(task_id)).items()}

    def state(self, task_id: str) -> str | None:
        return self.field(self.keys.task(task_id), "state")

    def flow(self, name: str, flow: str = FLOW) -> str | None:
        return self.field(self.keys.flow(flow), name)

    def inflight(self, queue: str = Q) -> str | None:
        return self.field(self.keys.inflight, queue)

    def queued(self, queue: str = Q) -> dict[str, float]:
        return {m.decode(): s for m, s in
                self.client.zrange(self.keys.queue(queue), 0, -1, withscores=True)}

    def inbox(self, worker: str = W) -> list[Lease]:
        leases = [signals.parse_lease(raw)
                  for raw in self.client.lrange(self.keys.inbox(worker), 0, -1)]
        assert None not in leases
        return leases  # type: ignore[return-value]

    def leases(self, worker: str = W) -> set[str]:
        return {m.decode() for m in self.client.smembers(self.keys.leases(worker))}

    def deadline(self, task_id: str, token: str, worker: str = W) -> float | None:
        """The due time of one lease's deadline member ``id|worker|token``."""
        return self.client.zscore(self.keys.deadlines, f"{task_id}|{worker}|{token}")

    def deadlines(self) -> set[str]:
        return set(strings(self.client.zrange(self.keys.deadlines, 0, -1)))

    def wake(self) -> list[str]:
        return strings(self.client.lrange(self.keys.wake, 0, -1))

    def now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000


def strings(values: Sequence[Any]) -> list[str]:
    return [v.decode() for v in values]


@pytest.fixture
def db(fake: redis.Redis, namespace: str) -> Db:
    keys = Keys(namespace)
    scripts = Scripts(fake, keys)
    leader = scripts.leader("dispatcher-1", TTL)
    assert leader is not None
    scripts.heartbeat(W, WorkerInfo(W, (Q,), 4).to_blob(), TTL)
    fake.delete(keys.wake)
    return Db(fake, keys, scripts, leader)


# -- leader and heartbeat ------------------------------------------------------------------


def test_leader_lease_is_exclusive_and_renewable(fake: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    scripts = Scripts(fake, keys)
    first = scripts.leader("d1", TTL)
    assert first == "1|d1"
    assert scripts.leader("d2", TTL) is None
    assert scripts.leader("d1", TTL) == first
    assert 0 < fake.pttl(keys.leader) <= TTL
    fake.delete(keys.leader)  # the lease expired
    assert scripts.leader("d2", TTL) == "2|d2"
    assert scripts.leader("d1", TTL) is None


@pytest.mark.parametrize("bad", ["not-a-number", "1.5", b"\xff", ["a", "list"]])
def test_an_epoch_that_is_no_counter_is_replaced_from_the_clock_and_told(
        fake: redis.Redis, namespace: str, bad: object) -> None:
    keys = Keys(namespace)
    scripts = Scripts(fake, keys)
    if isinstance(bad, list):
        fake.rpush(keys.epoch, *bad)
    else:
        fake.set(keys.epoch, bad)  # type: ignore[arg-type]
    lead = scripts.lead("d1", TTL)
    assert lead.token is not None
    epoch = int(lead.token.split("|")[0])
    seconds, _ = fake.time()
    assert epoch >= seconds * 1000  # above any count of leaders
    assert lead.bad_epoch == (b"a list" if isinstance(bad, list)
                              else bad if isinstance(bad, bytes) else str(bad).encode())
    assert fake.get(keys.epoch) == str(epoch).encode()
    fake.delete(keys.leader)
    assert scripts.lead("d2", TTL) == type(lead)(f"{epoch + 1}|d2")  # counts on from there


def test_heartbeat_registers_worker_and_signals_with_parseable_blob(db: Db) -> None:
    info = WorkerInfo("w9", (Q, "other"), 4, cpu=0.5, host="h|ost")
    assert db.scripts.heartbeat("w9", info.to_blob(), TTL)[:2] == (False, 0)
    existed, leased, redis_ms = db.scripts.heartbeat("w9", info.to_blob(), TTL)
    assert (existed, leased) == (True, 0)
    assert abs(redis_ms - db.now_ms()) < 1_000  # Redis time, for dating light beats
    assert db.client.zscore(db.keys.workers, "w9") == redis_ms
    assert 0 < db.client.pttl(db.keys.worker("w9")) <= TTL
    signal = signals.parse(db.client.lindex(db.keys.wake, -1))  # type: ignore[arg-type]
    assert signal is not None
    assert (signal.kind, signal.worker, signal.leased) == (signals.HEARTBEAT, "w9", 0)
    assert WorkerInfo.from_blob(signal.blob) == info


def test_heartbeat_reports_how_many_tasks_the_worker_holds(db: Db) -> None:
    db.put_task("a")
    db.put_task("b")
    db.lease("a", "b")
    assert db.scripts.heartbeat(W, b"info", TTL)[:2] == (True, 2)
    assert db.wake()[-1] == f"h|{W}|2|info"


def test_a_light_beat_dates_the_worker_without_a_signal(db: Db) -> None:
    db.scripts.heartbeat(W, b"info", TTL)
    wake = db.wake()
    assert db.scripts.keep_alive(W, 123_456) is True
    assert db.client.zscore(db.keys.workers, W) == 123_456
    assert db.wake() == wake


def test_a_light_beat_of_a_reaped_worker_says_it_must_register_again(db: Db) -> None:
    db.client.zrem(db.keys.workers, W)  # reaped
    assert db.scripts.keep_alive(W, 1) is False


def test_heartbeat_trims_the_wake_list_to_its_cap(db: Db) -> None:
    db.client.rpush(db.keys.wake, *["s"] * WAKE_CAP)
    db.scripts.heartbeat(W, b"info", TTL)
    assert db.client.llen(db.keys.wake) == WAKE_CAP
    assert db.client.lindex(db.keys.wake, -1) == f"h|{W}|0|info".encode()


# -- assign --------------------------------------------------------------------------------


def test_assign_moves_ids_into_the_inbox_as_entries_carrying_the_spec(db: Db) -> None:
    db.put_task("a", score=1.0, children=[Child("c", "other", 9.0)])
    db.put_task("b", score=2.0, timeout=2.5)
    records = {t: db.task(t) for t in "ab"}
    # b has a timeout, so one deadline is set
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "3.7", ["a", "b"]) == (2, 2, 0, 1)
    assert db.queued() == {}
    a, b = db.inbox()
    assert (a.task_id, a.token, b.task_id, b.token) == ("a", "3.7.1", "b", "3.7.2")
    assert (a.queue, a.flow, a.fn, a.name) == (Q, FLOW, "tests.tasks:fn", "name-a")
    assert codec.decode_call(a.args) == ([1], {})
    assert codec.unpack(a.children) == [["c", "other", 9.0]]
    assert (a.timeout, b.timeout) == (None, 2.5)
    assert db.leases() == {"a|3.7.1", "b|3.7.2"} == {a.member, b.member}
    assert db.inflight() == "2"
    # The records are not written: the members are the leases, and the tasks still read
    # "queued" with no worker or lease field; only their absence from the queue tells.
    assert {t: db.task(t) for t in "ab"} == records
    for record in records.values():
        assert record["state"] == "queued"
        assert "worker" not in record
        assert "lease" not in record


def test_assign_leaves_a_ready_dependent_pending_with_no_unmet_dependency(db: Db) -> None:
    # ack.lua queued it without touching its state; assign does not touch it either.
    db.put_task("c", state="pending", upstream=0)
    db.client.zadd(db.keys.queue(Q), {"c": 5.0})
    token = db.lease("c")["c"]
    record = db.task("c")
    assert (record["state"], record["deps"]) == ("pending", "0")
    assert "lease" not in record
    assert db.queued() == {}
    assert db.leases() == {f"c|{token}"}


def test_assign_counts_leases_already_held_against_capacity(db: Db) -> None:
    for i, t in enumerate("abcd"):
        db.put_task(t, score=float(i))
    db.lease("a")
    assert db.scripts.assign(db.leader, W, Q, 3, GRACE, "1.2", ["b", "c", "d"]) == (2, 3, 0, 0)
    assert db.queued() == {"d": 3.0}
    assert db.state("d") == "queued"
    # Full: nothing more until a slot frees.
    assert db.scripts.assign(db.leader, W, Q, 3, GRACE, "1.3", ["d"]) == (0, 3, 0, 0)
    assert db.queued() == {"d": 3.0}
    assert db.inflight() == "3"
    assert len(db.inbox()) == 3


def test_assign_of_an_empty_batch_reports_the_leases_held(db: Db) -> None:
    db.put_task("a")
    db.lease("a")
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "1.2", []) == (0, 1, 0, 0)


def test_assign_skips_ids_no_longer_in_the_queue(db: Db) -> None:
    db.put_task("a")
    first = db.lease("a")
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "1.2", ["a"]) == (0, 1, 0, 0)
    assert db.leases() == {f"a|{first['a']}"}
    assert [lease.token for lease in db.inbox()] == [first["a"]]
    assert db.inflight() == "1"


def test_assign_walks_the_ids_in_order_to_fill_the_free_slots(db: Db) -> None:
    # "gone" has a record but left the queue (leased elsewhere): skipped, no slot taken.
    db.put_task("gone", state="pending")
    for i, t in enumerate("abc"):
        db.put_task(t, score=float(i))
    assert db.scripts.assign(db.leader, W, Q, 2, GRACE, "1.4",
                             ["gone", "a", "b", "c"]) == (2, 2, 0, 0)
    assert [(lease.task_id, lease.token) for lease in db.inbox()] == [
        ("a", "1.4.1"), ("b", "1.4.2")]
    assert db.leases() == {"a|1.4.1", "b|1.4.2"}
    assert db.queued() == {"c": 2.0}
    assert db.state("gone") == "pending"
    assert db.inflight() == "2"


def test_assign_with_one_free_slot_drops_a_ghost_and_leases_the_next_id(db: Db) -> None:
    db.put_task("a")
    db.client.zadd(db.keys.queue(Q), {"ghost": 0})
    assert db.scripts.assign(db.leader, W, Q, 1, GRACE, "1.6", ["ghost", "a"]) == (1, 1, 1, 0)
    assert db.queued() == {}
    assert db.leases() == {"a|1.6.1"}
    assert [lease.task_id for lease in db.inbox()] == ["a"]
    assert db.inflight() == "1"


def test_assign_stops_at_the_free_slots_before_a_ghost_past_them(db: Db) -> None:
    db.put_task("a", score=1.0)
    db.client.zadd(db.keys.queue(Q), {"ghost": 2.0})
    assert db.scripts.assign(db.leader, W, Q, 1, GRACE, "1.6", ["a", "ghost"]) == (1, 1, 0, 0)
    assert db.queued() == {"ghost": 2.0}
    assert db.leases() == {"a|1.6.1"}


def test_assign_drops_a_queued_id_whose_task_record_is_gone(db: Db) -> None:
    db.put_task("a")
    db.client.zadd(db.keys.queue(Q), {"ghost": 0})
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "1.5", ["ghost", "a"]) == (1, 1, 1, 0)
    assert db.queued() == {}
    [entry] = db.inbox()
    assert (entry.task_id, entry.token) == ("a", "1.5.1")
    assert db.leases() == {"a|1.5.1"}
    assert not db.client.exists(db.keys.task("ghost"))
    assert db.inflight() == "1"


def test_assign_refuses_a_wrong_leader_token(db: Db) -> None:
    db.put_task("a")
    assert db.scripts.assign("99|impostor", W, Q, 4, GRACE, "99.1", ["a"]) == (-1, 0, 0, 0)
    assert db.queued() == {"a": 1000.0}
    assert db.state("a") == "queued"
    assert not db.client.exists(db.keys.inbox(W), db.keys.leases(W), db.keys.inflight)


def test_assign_sets_a_deadline_only_for_tasks_with_a_timeout(db: Db) -> None:
    db.put_task("slow", timeout=2.5)
    db.put_task("free")
    before = db.now_ms()
    tokens = db.lease("slow", "free")
    deadline = db.deadline("slow", tokens["slow"])
    assert deadline is not None
    assert before + 2_500 + GRACE <= deadline <= db.now_ms() + 2_500 + GRACE
    assert db.deadlines() == {f"slow|{W}|{tokens['slow']}"}


def test_assign_names_the_worker_and_the_lease_in_each_deadline_member(db: Db) -> None:
    db.put_task("a", timeout=1)
    db.put_task("b", timeout=1)
    db.register("w2")
    assert db.lease("a") == {"a": "1.1.1"}
    assert db.lease("b", worker="w2", prefix="1.2") == {"b": "1.2.1"}
    assert db.deadlines() == {f"a|{W}|1.1.1", "b|w2|1.2.1"}


def test_assign_counts_inflight_per_queue(db: Db) -> None:
    db.put_task("a")
    db.put_task("b")
    db.put_task("x", queue="other")
    db.lease("a", "b")
    db.lease("x", queue="other", prefix="1.2")
    assert (db.inflight(), db.inflight("other")) == ("2", "1")
    assert {lease.queue for lease in db.inbox()} == {Q, "other"}


# -- mark_running --------------------------------------------------------------------------


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


# -- ack -----------------------------------------------------------------------------------


def test_ack_stores_the_result_and_frees_the_slot(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", timeout=30)
    token = db.lease("a")["a"]
    db.scripts.mark_running(W, [("a", token)])
    assert db.deadline("a", token) is not None
    assert db.ack("a", token, result=codec.pack({"r": 1}), has_deadline=True) is True
    record = db.client.hgetall(db.keys.task("a"))
    assert record[b"state"] == b"completed"
    assert codec.unpack(record[b"result"]) == {"r": 1}
    assert record[b"started"] == str(STARTED).encode()
    assert record[b"finished"] == str(FINISHED).encode()  # the worker's clock, not TIME
    assert db.client.hget(db.keys.flow(FLOW), "finished") is None  # one task of two
    assert (record[b"worker"], record[b"lease"]) == (W.encode(), token.encode())
    assert 0 < db.client.pttl(db.keys.task("a")) <= TTL
    assert db.leases() == set()
    assert db.inflight() == "0"
    assert db.deadlines() == set()
    assert db.wake() == [f"k|{W}|0"]
    assert db.flow("remaining") == "1"


def test_ack_accepts_a_task_never_marked_running(db: Db) -> None:
    # Short tasks are never marked: the worker pops the entry, runs it and acks.
    db.put_flow(1)
    db.put_task("a")
    token = db.lease("a")["a"]
    db.client.delete(db.keys.inbox(W))  # popped by the worker's fetch loop
    assert db.ack("a", token, result=b"ok", finished_ms=STARTED + 7) is True
    record = db.task("a")
    assert (record["state"], record["result"], record["finished"]) == (
        "completed", "ok", str(STARTED + 7))
    assert (record["worker"], record["lease"]) == (W, token)


def test_ack_removes_only_the_deadline_member_of_its_own_lease(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", timeout=5)
    db.put_task("b", timeout=5)
    tokens = db.lease("a", "b")
    stale = f"a|w0|{tokens['a']}"  # same id and token, another worker: not this lease
    db.client.zadd(db.keys.deadlines, {stale: 1})
    assert db.ack("a", tokens["a"], has_deadline=True)
    assert db.deadlines() == {stale, f"b|{W}|{tokens['b']}"}


def test_ack_of_a_batch_frees_slots_per_queue_settles_per_flow_and_signals_once(
        db: Db) -> None:
    db.put_flow(2, flow="f1")
    db.put_flow(1, flow="f2")
    db.put_task("a", flow="f1")
    db.put_task("b", flow="f1", queue="other")
    db.put_task("c", flow="f2")
    tokens = db.lease("a", "c")
    tokens |= db.lease("b", queue="other", prefix="1.2")
    stored = db.scripts.ack(W, [
        Done("a", tokens["a"], Q, "f1", STARTED, b"ra"),
        Done("b", tokens["b"], "other", "f1", STARTED, b"rb"),
        Done("c", tokens["c"], Q, "f2", STARTED, b"rc"),
    ], TTL, FINISHED)
    assert stored == [True, True, True]
    assert {t: db.task(t)["result"] for t in "abc"} == {"a": "ra", "b": "rb", "c": "rc"}
    assert (db.inflight(), db.inflight("other")) == ("0", "0")
    for flow in ("f1", "f2"):
        assert (db.flow("state", flow), db.flow("remaining", flow)) == ("completed", "0")
        assert db.client.lrange(db.keys.flow_done(flow), 0, -1) == [b"completed"]
    assert db.wake() == [f"k|{W}|0"]
    signal = signals.parse(db.client.lindex(db.keys.wake, 0))  # type: ignore[arg-type]
    assert signal == signals.Signal(signals.ACK, worker=W, leased=0, queued=False)


def test_ack_in_a_batch_refuses_only_the_entries_whose_lease_moved_on(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    untouched = db.task("b")
    stored = db.scripts.ack(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok"),
                                Done("b", "1.1.99", Q, FLOW, STARTED, b"stale")],
                            TTL, FINISHED)
    assert stored == [True, False]
    assert db.state("a") == "completed"
    assert db.task("b") == untouched
    assert db.leases() == {f"b|{tokens['b']}"}
    assert (db.inflight(), db.flow("remaining")) == ("1", "1")
    assert db.wake() == [f"k|{W}|1"]


def test_ack_and_take_hands_over_the_next_inbox_entries_in_the_same_call(db: Db) -> None:
    db.put_flow(3)
    for t in "abc":
        db.put_task(t)
    tokens = db.lease("a", "b", "c")
    db.client.lpop(db.keys.inbox(W))  # the worker fetched "a" and ran it

    stored, taken = db.scripts.ack_and_take(
        W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok")], TTL, FINISHED, 1)
    assert stored == [True]
    assert db.state("a") == "completed"
    assert [signals.parse_lease(raw).task_id for raw in taken] == ["b"]  # type: ignore[union-attr]
    assert [lease.task_id for lease in db.inbox()] == ["c"]
    assert db.leases() == {f"b|{tokens['b']}", f"c|{tokens['c']}"}  # still leased, not lost


def test_ack_and_take_drops_an_inbox_entry_without_its_lease(db: Db) -> None:
    db.put_flow(2)
    for t in "ab":
        db.put_task(t)
    tokens = db.lease("a", "b")
    db.client.lpop(db.keys.inbox(W))
    raw_b = db.client.lpop(db.keys.inbox(W))
    forged = raw_b.replace(tokens["b"].encode(), b"9.9.9")  # type: ignore[union-attr]
    db.client.rpush(db.keys.inbox(W), forged, raw_b)  # a writer to Redis pushed one more

    stored, taken = db.scripts.ack_and_take(
        W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok")], TTL, FINISHED, 2)
    assert stored == [True]
    assert taken == [raw_b]  # the forged entry is gone, not handed to the worker
    assert db.client.llen(db.keys.inbox(W)) == 0


def _take_batch(db: Db) -> tuple[dict[str, str], list[Lease]]:
    """Worker W ran "a" and acknowledges it, taking "b", "c", "d" as one pool child's
    batch (its ahead field "0")."""
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t)
    tokens = db.lease("a", "b", "c", "d")
    db.client.lpop(db.keys.inbox(W))
    stored, taken = db.scripts.ack_and_take(
        W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok")], TTL, FINISHED, 3, ahead="0")
    assert stored == [True]
    return tokens, [lease for lease in map(signals.parse_lease, taken) if lease]


def test_a_batch_taken_with_the_ack_records_the_leases_after_its_first_as_not_started(
        db: Db) -> None:
    tokens, batch = _take_batch(db)
    assert [lease.task_id for lease in batch] == ["b", "c", "d"]
    assert db.client.hgetall(db.keys.ahead(W)) == {
        b"0": f"c|{tokens['c']} d|{tokens['d']}".encode()}
    assert signals.parse_ahead(db.client.hvals(db.keys.ahead(W))) == [
        ("c", tokens["c"]), ("d", tokens["d"])]


def test_a_single_lease_taken_with_the_ack_records_nothing_ahead(db: Db) -> None:
    db.put_flow(2)
    for t in "ab":
        db.put_task(t)
    tokens = db.lease("a", "b")
    db.client.lpop(db.keys.inbox(W))
    db.scripts.ack_and_take(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok")], TTL,
                            FINISHED, 3, ahead="0")
    assert db.client.exists(db.keys.ahead(W)) == 0


def _reap(db: Db, settings: Settings) -> tuple[int, int, list[str]]:
    from balancer.upkeep import Upkeep

    upkeep = Upkeep(db.client, db.keys, db.scripts,
                    settings.replace(namespace=db.keys.namespace))
    return upkeep.reap(db.leader, W, 0)


def test_the_reaper_counts_a_loss_for_a_batchs_first_lease_and_makes_the_rest_suspects(
        db: Db, settings: Settings) -> None:
    _take_batch(db)  # "b" ran first (its result not stored); "c" or "d" may be running
    requeued, dead, ids = _reap(db, settings)
    assert (requeued, dead, sorted(ids)) == (3, 0, ["b", "c", "d"])
    assert [db.field(db.keys.task(t), "lost") for t in "bcd"] == ["1", "0", "0"]
    assert [db.field(db.keys.task(t), "suspect") for t in "bcd"] == [None, "1", "1"]
    assert db.client.exists(db.keys.ahead(W)) == 0
    tokens = db.lease("b", "c")  # leased again, a suspect's token asks for its start
    assert not tokens["b"].endswith("!") and tokens["c"].endswith("!")


def test_a_suspect_whose_start_was_told_counts_a_loss_when_its_worker_dies(
        db: Db, settings: Settings) -> None:
    db.put_flow(3)
    for t in "efg":
        db.put_task(t)
    db.client.hset(db.keys.task("f"), "suspect", 1)
    db.lease("e", "f", "g")
    _, taken = db.scripts.ack_and_take(W, [], TTL, FINISHED, 3, ahead="0")
    batch = [lease for lease in map(signals.parse_lease, taken) if lease]
    assert [(lease.task_id, lease.suspect) for lease in batch] == [
        ("e", False), ("f", True), ("g", False)]
    db.scripts.note_ahead(W, "0", signals.ahead_value(batch[2:]))  # the child starts "f"
    _reap(db, settings)
    assert [db.field(db.keys.task(t), "lost") for t in "efg"] == ["1", "1", "0"]


def test_ack_wakes_the_dispatcher_only_once_the_worker_is_down_to_its_refill_point(
        db: Db) -> None:
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t)
    tokens = db.lease("a", "b", "c", "d")
    for t in "ab":  # 3 then 2 leases left: above the refill point of 2, no signal
        assert db.scripts.ack(W, [Done(t, tokens[t], Q, FLOW, STARTED, b"ok")], TTL,
                              FINISHED, quiet_above=2) == [True]
    assert db.wake() == [f"k|{W}|2"]  # the second ack left 2: due a refill
    db.client.delete(db.keys.wake)
    assert db.scripts.ack(W, [Done("c", tokens["c"], Q, FLOW, STARTED, b"ok")], TTL,
                          FINISHED, quiet_above=2) == [True]
    assert db.wake() == [f"k|{W}|1"]


def test_below_the_refill_point_acks_signal_at_halving_checkpoints_not_at_every_ack(
        db: Db) -> None:
    ids = [f"t{i}" for i in range(10)]
    db.put_flow(len(ids))
    for t in ids:
        db.put_task(t)
    tokens = db.lease(*ids)
    signalled = []
    for t in ids[:7]:  # one at a time: 9, 8, ..., 3 held
        db.scripts.ack(W, [Done(t, tokens[t], Q, FLOW, STARTED, b"ok")], TTL, FINISHED,
                       quiet_above=8)
        signalled += [int(s.split("|")[2]) for s in db.wake()]
        db.client.delete(db.keys.wake)
    assert signalled == [8, 4]  # the refill point, then half of it
    # A batch that jumps over a checkpoint (3 -> 0 passes 2 and 1) signals once.
    done = [Done(t, tokens[t], Q, FLOW, STARTED, b"ok") for t in ids[7:]]
    db.scripts.ack(W, done, TTL, FINISHED, quiet_above=8)
    assert db.wake() == [f"k|{W}|0"]


def test_a_quiet_ack_still_wakes_the_dispatcher_when_it_queued_a_dependent(db: Db) -> None:
    db.put_flow(5)
    child = Child("c", Q, 5.0)
    db.put_task("a", children=[child])
    db.put_task("c", state="pending", upstream=1)
    for t in "xyz":
        db.put_task(t)
    tokens = db.lease("a", "x", "y", "z")
    assert db.scripts.ack(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok", False, [child])],
                          TTL, FINISHED, quiet_above=2) == [True]
    assert db.queued() == {"c": 5.0}
    assert db.wake() == [f"a|{W}|3"]  # 3 held is above 2, but "c" is new work


def test_an_ack_to_an_idle_dispatcher_wakes_it_only_when_it_queued_a_dependent(
        db: Db) -> None:
    db.put_flow(3)
    child = Child("c", Q, 5.0)
    db.put_task("a", children=[child])
    db.put_task("b")
    db.put_task("c", state="pending", upstream=1)
    tokens = db.lease("a", "b")
    db.client.set(db.keys.idle, 1)
    assert db.ack("b", tokens["b"])
    assert db.wake() == []  # nothing queued anywhere: the freed slot needs no refill
    assert db.ack("a", tokens["a"], child)
    assert db.wake() == [f"a|{W}|0"]  # "c" is new work
    db.client.delete(db.keys.idle, db.keys.wake)
    db.put_task("d")
    assert db.ack("d", db.lease("d")["d"])
    assert db.wake() == [f"k|{W}|0"]  # not idle: every slot freed is told


def test_ack_and_take_of_an_empty_inbox_takes_nothing(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    token = db.lease("a")["a"]
    db.client.lpop(db.keys.inbox(W))
    stored, taken = db.scripts.ack_and_take(
        W, [Done("a", token, Q, FLOW, STARTED, b"ok")], TTL, FINISHED, 2)
    assert (stored, taken) == ([True], [])


def test_ack_queues_a_dependent_exactly_when_its_last_upstream_completes(db: Db) -> None:
    db.put_flow(3)
    child = Child("c", "later", 5.0)
    db.put_task("a", children=[child])
    db.put_task("b", children=[child])
    db.put_task("c", state="pending", queue="later", upstream=2, score=1234.0)
    tokens = db.lease("a", "b")

    assert db.ack("a", tokens["a"], child)
    assert db.field(db.keys.task("c"), "deps") == "1"
    assert db.queued("later") == {}

    assert db.ack("b", tokens["b"], child)
    assert db.field(db.keys.task("c"), "deps") == "0"
    # Queued at the score the ack carries; its record stays "pending" with no unmet
    # dependency, which balancer/run.py reports as queued.
    assert db.queued("later") == {"c": 5.0}
    assert db.state("c") == "pending"


def test_ack_of_both_upstreams_in_one_batch_queues_the_dependent_once(db: Db) -> None:
    child, tokens = db.join()
    assert db.scripts.ack(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"", False, [child]),
                              Done("b", tokens["b"], Q, FLOW, STARTED, b"", False, [child])],
                          TTL, FINISHED) == [True, True]
    assert db.queued() == {"c": 5.0}
    assert db.field(db.keys.task("c"), "deps") == "0"
    assert db.flow("remaining") == "1"


def test_ack_never_queues_a_dependent_whose_other_upstream_failed(db: Db) -> None:
    child, tokens = db.join()
    assert db.fail("b", tokens["b"], "final") == FAIL_FAILED
    assert db.scripts.cascade("b", FLOW, b"upstream b failed", ["c"], TTL) == 1

    assert db.ack("a", tokens["a"], child)
    assert db.queued() == {}
    assert db.state("c") == "upstream_failed"
    assert int(db.field(db.keys.task("c"), "deps") or 0) >= NEVER - 1
    assert (db.flow("state"), db.flow("remaining")) == ("failed", "0")


def test_ack_replayed_by_the_same_lease_answers_true_and_changes_nothing(db: Db) -> None:
    child, tokens = db.join()
    assert db.ack("a", tokens["a"], child, result=b"first")
    before = db.task("a")
    # The reply was lost; the worker acks again: accepted, but counted once.
    assert db.ack("a", tokens["a"], child, result=b"second", finished_ms=FINISHED + 9)
    assert db.task("a") == before
    assert before["result"] == "first"
    assert db.field(db.keys.task("c"), "deps") == "1"
    assert db.queued() == {}
    assert (db.flow("remaining"), db.inflight()) == ("2", "1")
    assert db.wake() == [f"k|{W}|1"]


def test_ack_of_a_lease_that_moved_on_is_refused(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    old = db.lease("a")["a"]
    db.reap(LeasedTask("a", Q, old, started=True))  # w1 presumed dead
    db.register("w2")
    new = db.lease("a", worker="w2", prefix="1.2")["a"]
    assert new != old

    assert db.ack("a", old, result=b"late") is False
    assert db.state("a") == "queued"  # leased to w2, not marked running
    assert "result" not in db.task("a")
    assert db.leases("w2") == {f"a|{new}"}
    assert db.ack("a", new, worker="w2", result=b"ok") is True
    # Once the new lease completed, the old one is still refused, not taken for a replay.
    assert db.ack("a", old, result=b"late") is False
    record = db.task("a")
    assert (record["result"], record["worker"], record["lease"]) == ("ok", "w2", new)
    assert db.flow("remaining") == "0"


@pytest.mark.parametrize(("who", "token"), [(W, "1.1.2"), (W, "9.9.1"), ("w2", "1.1.1")],
                         ids=["sibling-token", "unknown-token", "other-worker"])
def test_ack_by_a_caller_that_does_not_hold_the_lease_is_refused(
        db: Db, who: str, token: str) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    assert db.lease("a", "b") == {"a": "1.1.1", "b": "1.1.2"}
    record = db.task("a")
    assert db.ack("a", token, worker=who, result=b"late") is False
    assert db.task("a") == record
    assert record["state"] == "queued"
    assert db.leases() == {"a|1.1.1", "b|1.1.2"}
    assert (db.inflight(), db.flow("remaining")) == ("2", "2")
    assert db.wake() == []


def test_last_ack_of_a_flow_settles_it_and_pushes_the_state(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    db.ack("a", tokens["a"])
    assert db.flow("state") == "running"
    assert db.client.llen(db.keys.flow_done(FLOW)) == 0

    db.ack("b", tokens["b"])
    flow = db.client.hgetall(db.keys.flow(FLOW))
    assert (flow[b"state"], flow[b"remaining"]) == (b"completed", b"0")
    assert flow[b"finished"] == str(FINISHED).encode()  # when its last task finished
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"completed"]
    assert 0 < db.client.pttl(db.keys.flow_done(FLOW)) <= TTL
    assert 0 < db.client.pttl(db.keys.flow(FLOW)) <= TTL


def test_flow_with_a_failed_task_settles_failed_on_its_last_ack(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    assert db.fail("a", tokens["a"], "final") == FAIL_FAILED
    assert db.flow("state") == "running"
    db.ack("b", tokens["b"])
    assert (db.flow("state"), db.flow("failed")) == ("failed", "1")
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"failed"]


# -- fail ----------------------------------------------------------------------------------


def test_fail_with_retries_left_schedules_a_retry(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=2, retry_delay=10.0, timeout=5)
    token = db.lease("a")["a"]
    assert db.deadline("a", token) is not None
    before = db.now_ms()
    assert db.fail("a", token) == FAIL_RETRIED
    after = db.now_ms()
    record = db.task("a")
    assert (record["state"], record["failures"], record["error"]) == ("retrying", "1", "boom")
    assert (record["started"], record["worker"], record["lease"]) == (str(STARTED), W, token)
    due = db.client.zscore(db.keys.delayed, "a")
    assert due is not None
    assert before + 10_000 <= due <= after + 10_000
    assert db.leases() == set()
    assert db.inflight() == "0"
    assert db.deadlines() == set()
    assert db.flow("remaining") == "1"
    assert db.client.llen(db.keys.cascade) == 0
    assert db.wake() == [f"a|{W}|0", "r"]  # the slot is free; a retry waits in delayed


def test_fail_backs_off_exponentially(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=5, retry_delay=10.0, failures=2)
    token = db.lease("a")["a"]
    before = db.now_ms()
    assert db.fail("a", token) == FAIL_RETRIED
    due = db.client.zscore(db.keys.delayed, "a")
    assert due is not None
    assert before + 40_000 <= due <= db.now_ms() + 40_000  # third failure: 10s * 2**2


def test_fail_without_retries_left_fails_cascades_and_settles_the_flow(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=1, failures=1, children=[Child("c", Q, 1.0)])
    token = db.lease("a")["a"]
    assert db.fail("a", token) == FAIL_FAILED
    record = db.task("a")
    assert (record["state"], record["failures"], record["error"]) == ("failed", "2", "boom")
    assert (record["worker"], record["lease"]) == (W, token)
    assert 0 < db.client.pttl(db.keys.task("a")) <= TTL
    assert db.client.zscore(db.keys.delayed, "a") is None
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["a"]
    assert db.wake() == [f"a|{W}|0", signals.CASCADE]
    flow = db.client.hgetall(db.keys.flow(FLOW))
    assert (flow[b"state"], flow[b"failed"], flow[b"remaining"]) == (b"failed", b"1", b"0")
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"failed"]


def test_fail_in_final_mode_fails_even_with_retries_left(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", retries=3)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "final", error=b"timeout") == FAIL_FAILED
    record = db.task("a")
    assert (record["state"], record["error"], record["worker"], record["lease"]) == (
        "failed", "timeout", W, token)
    # No dependents: nothing to cascade; the flow still has another task.
    assert db.client.llen(db.keys.cascade) == 0
    assert db.wake() == [f"a|{W}|0"]
    assert (db.flow("state"), db.flow("failed")) == ("running", "1")


def test_fail_replayed_by_the_same_lease_changes_nothing_more(db: Db) -> None:
    db.put_flow(3)
    db.put_task("r", retries=1)
    db.put_task("f")
    db.put_task("c", lost=0)
    tokens = db.lease("r", "f", "c")
    assert db.fail("r", tokens["r"]) == FAIL_RETRIED
    assert db.fail("f", tokens["f"]) == FAIL_FAILED
    assert db.fail("c", tokens["c"], "crash") == FAIL_RETRIED
    records = {t: db.task(t) for t in "rfc"}
    wake = db.wake()

    assert db.fail("r", tokens["r"]) == FAIL_RETRIED
    assert db.fail("f", tokens["f"]) == FAIL_FAILED
    assert db.fail("c", tokens["c"], "crash") == FAIL_RETRIED
    assert {t: db.task(t) for t in "rfc"} == records
    assert (records["r"]["failures"], records["f"]["failures"], records["c"]["lost"]) == (
        "1", "1", "1")
    assert {t: records[t]["lease"] for t in "rfc"} == tokens
    assert (db.flow("remaining"), db.flow("failed")) == ("2", "1")
    assert db.inflight() == "0"
    assert db.wake() == wake


def test_fail_in_crash_mode_replayed_after_quarantine_answers_quarantined(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", lost=POISON - 1)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "crash") == FAIL_QUARANTINED
    record = db.task("a")
    assert db.fail("a", token, "crash") == FAIL_QUARANTINED
    assert db.task("a") == record
    assert db.client.zcard(db.keys.dlq) == 1
    assert (db.field(db.keys.task("a"), "lost"), db.inflight()) == (str(POISON), "0")


def test_fail_of_a_lease_the_reaper_took_back_changes_nothing(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", retries=3)
    db.put_task("b", retries=3)
    tokens = db.lease("a", "b")
    db.scripts.mark_running(W, [("b", tokens["b"])])
    assert db.reap(*(LeasedTask(t, Q, tokens[t], started=True) for t in "ab")) == (2, 0)
    records = {t: db.task(t) for t in "ab"}
    db.client.delete(db.keys.wake)

    # "a" was never marked running: its record holds no lease, and the late fail is refused.
    assert db.fail("a", tokens["a"]) == FAIL_REFUSED
    assert db.fail("b", tokens["b"]) == FAIL_REFUSED
    assert {t: db.task(t) for t in "ab"} == records
    assert db.queued() == {"a": 1000.0, "b": 1000.0}
    assert db.client.zcard(db.keys.delayed) == 0
    assert (db.inflight(), db.flow("remaining"), db.flow("failed")) == ("0", "2", "0")
    assert db.wake() == []


def test_fail_of_a_lease_reaped_after_it_was_marked_running_is_refused(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=3)
    token = db.lease("a")["a"]
    db.scripts.mark_running(W, [("a", token)])
    assert db.reap(LeasedTask("a", Q, token, started=True)) == (1, 0)
    assert db.fail("a", token) == FAIL_REFUSED


def test_fail_replayed_after_the_task_was_leased_again_and_marked_answers_as_before(
        db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=1)
    old = db.lease("a")["a"]
    assert db.fail("a", old) == FAIL_RETRIED
    assert db.scripts.promote([("a", Q)]) == 1
    new = db.lease("a", prefix="1.2")["a"]
    assert db.scripts.mark_running(W, [("a", new)]) == 1
    assert db.fail("a", old) == FAIL_RETRIED


@pytest.mark.parametrize(("who", "token"), [(W, "1.1.9"), ("w2", "1.1.1")],
                         ids=["wrong-token", "other-worker"])
def test_fail_by_a_caller_that_does_not_hold_the_lease_is_refused(
        db: Db, who: str, token: str) -> None:
    db.put_flow(1)
    db.put_task("a", timeout=5)
    assert db.lease("a") == {"a": "1.1.1"}
    db.scripts.mark_running(W, [("a", "1.1.1")])
    record = db.task("a")
    assert db.fail("a", token, worker=who, error=b"late") == FAIL_REFUSED
    assert db.task("a") == record
    assert (record["state"], record["failures"], record["lease"]) == ("running", "0", "1.1.1")
    assert db.deadlines() == {f"a|{W}|1.1.1"}
    assert (db.inflight(), db.flow("remaining")) == ("1", "1")
    assert db.wake() == []


def test_fail_after_the_ack_is_refused(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=3)
    token = db.lease("a")["a"]
    assert db.ack("a", token, result=b"ok")
    assert db.fail("a", token) == FAIL_REFUSED
    assert db.fail("a", token, "crash") == FAIL_REFUSED
    assert (db.state("a"), db.field(db.keys.task("a"), "failures")) == ("completed", "0")
    assert db.client.zcard(db.keys.delayed) == 0


def test_fail_in_crash_mode_requeues_at_once_and_counts_a_loss(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", score=3.0, retries=0, timeout=5)
    token = db.lease("a")["a"]
    assert db.deadline("a", token) is not None
    assert db.fail("a", token, "crash", error=b"segfault") == FAIL_RETRIED
    record = db.task("a")
    assert (record["state"], record["lost"], record["error"]) == ("queued", "1", "segfault")
    assert "worker" not in record  # back in its queue: no worker holds it
    assert (record["lease"], record["started"]) == (token, str(STARTED))
    assert record["failures"] == "0"
    assert db.queued() == {"a": 3.0}
    assert db.leases() == set()
    assert db.deadlines() == set()
    assert db.inflight() == "0"
    assert db.flow("remaining") == "1"
    assert db.wake() == [f"a|{W}|0"]


def test_fail_in_crash_mode_quarantines_at_the_poison_threshold(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", lost=POISON - 1)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "crash", error=b"segfault") == FAIL_QUARANTINED
    record = db.task("a")
    assert (record["state"], record["lost"], record["error"]) == ("dead", str(POISON), "segfault")
    assert "worker" not in record
    assert record["lease"] == token  # kept, so a replay answers as this call did
    assert db.client.zscore(db.keys.dlq, "a") is not None
    assert db.queued() == {}
    assert db.inflight() == "0"
    # Quarantined tasks stay in their flow until an operator retries or purges them.
    assert (db.flow("state"), db.flow("remaining")) == ("running", "1")
    assert db.client.llen(db.keys.flow_done(FLOW)) == 0


# -- cascade -------------------------------------------------------------------------------


def test_cascade_fails_pending_children_and_is_idempotent(db: Db) -> None:
    # a failed (already counted); b and c wait on it; d waits on c.
    db.put_flow(3)
    db.put_task("a", state="failed", children=[Child("b", Q, 1.0), Child("c", Q, 1.0)])
    db.put_task("b", state="pending", upstream=1)
    db.put_task("c", state="pending", upstream=1, children=[Child("d", Q, 1.0)])
    db.put_task("d", state="pending", upstream=1)
    db.client.rpush(db.keys.cascade, "a")

    assert db.scripts.cascade("a", FLOW, b"upstream a failed", ["b", "c"], TTL) == 2
    for t in ("b", "c"):
        record = db.task(t)
        assert (record["state"], record["error"]) == ("upstream_failed", "upstream a failed")
        assert int(record["deps"]) >= NEVER  # never reaches 0, so never queued
        assert 0 < db.client.pttl(db.keys.task(t)) <= TTL
    assert db.state("d") == "pending"
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["c"]
    assert (db.flow("remaining"), db.flow("failed")) == ("1", "2")

    assert db.scripts.cascade("a", FLOW, b"upstream a failed", ["b", "c"], TTL) == 0
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["c"]
    assert (db.flow("remaining"), db.flow("failed")) == ("1", "2")

    assert db.scripts.cascade("c", FLOW, b"upstream c failed", ["d"], TTL) == 1
    assert db.state("d") == "upstream_failed"
    assert db.client.llen(db.keys.cascade) == 0
    assert db.flow("state") == "failed"
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"failed"]


def test_cascade_leaves_children_that_are_not_pending(db: Db) -> None:
    db.put_flow(1)
    db.put_task("b", state="completed")
    assert db.scripts.cascade("a", FLOW, b"err", ["b"], TTL) == 0
    assert db.state("b") == "completed"
    assert db.flow("remaining") == "1"


# -- promote -------------------------------------------------------------------------------


def test_promote_queues_only_due_retries(db: Db) -> None:
    db.put_flow(2)
    db.put_task("due", retries=1, retry_delay=0.0, score=7.0)
    db.put_task("later", retries=1, retry_delay=3600.0, score=8.0)
    tokens = db.lease("due", "later")
    assert db.fail("due", tokens["due"]) == FAIL_RETRIED
    assert db.fail("later", tokens["later"]) == FAIL_RETRIED

    assert db.scripts.promote([("due", Q), ("later", Q)]) == 1
    assert db.queued() == {"due": 7.0}
    assert (db.state("due"), db.state("later")) == ("queued", "retrying")
    assert strings(db.client.zrange(db.keys.delayed, 0, -1)) == ["later"]


def test_promoted_task_is_leased_with_a_new_token_that_fences_the_old_one(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=1)
    old = db.lease("a")["a"]
    assert db.fail("a", old) == FAIL_RETRIED
    assert db.scripts.promote([("a", Q)]) == 1
    new = db.lease("a", prefix="1.2")["a"]
    assert new != old
    record = db.task("a")
    # A replay of the old fail answers as its first call did, and changes nothing.
    assert db.fail("a", old) == FAIL_RETRIED
    assert db.ack("a", old) is False
    assert db.task("a") == record
    assert (record["state"], record["failures"]) == ("queued", "1")
    assert db.leases() == {f"a|{new}"}
    assert (db.client.zcard(db.keys.delayed), db.inflight()) == (0, "1")
    assert db.ack("a", new, result=b"ok") is True
    # A replay still answers as its first call did, and changes nothing of the new lease.
    assert db.fail("a", old, "final") == FAIL_RETRIED
    assert (db.state("a"), db.field(db.keys.task("a"), "lease")) == ("completed", new)


def test_promote_drops_a_due_entry_whose_task_is_no_longer_retrying(db: Db) -> None:
    db.put_task("a", state="failed")
    db.client.zadd(db.keys.delayed, {"a": 0})
    assert db.scripts.promote([("a", Q)]) == 0
    assert db.client.zcard(db.keys.delayed) == 0
    assert db.queued() == {}


# -- reap ----------------------------------------------------------------------------------


def test_reap_requeues_waiting_and_running_tasks_of_a_dead_worker(db: Db) -> None:
    db.put_flow(2)
    db.put_task("held", score=1.0)
    db.put_task("busy", score=2.0, timeout=60)
    tokens = db.lease("busy", "held")
    db.client.lpop(db.keys.inbox(W))  # the worker popped "busy"; "held" waits in the inbox
    cutoff = db.now_ms() + 1_000  # the heartbeat is older than this
    assert db.deadlines() == {f"busy|{W}|{tokens['busy']}"}

    assert db.reap(LeasedTask("held", Q, tokens["held"]),
                   LeasedTask("busy", Q, tokens["busy"], started=True),
                   seen_before_ms=cutoff) == (2, 0)
    assert db.queued() == {"held": 1.0, "busy": 2.0}
    held, busy = db.task("held"), db.task("busy")
    assert (held["state"], held["lost"]) == ("queued", "0")
    assert (busy["state"], busy["lost"]) == ("queued", "1")
    for record in (held, busy):
        assert "worker" not in record
        assert "lease" not in record
    assert db.inflight() == "0"
    assert db.deadlines() == set()
    assert not db.client.exists(db.keys.worker(W), db.keys.inbox(W), db.keys.leases(W))
    assert db.client.zscore(db.keys.workers, W) is None
    assert db.flow("remaining") == "2"


def test_reap_quarantines_a_running_task_at_the_poison_threshold(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", lost=POISON - 1, children=[Child("b", Q, 1.0)])
    db.put_task("b", state="pending", upstream=1)
    token = db.lease("a")["a"]
    db.scripts.mark_running(W, [("a", token)])

    assert db.reap(LeasedTask("a", Q, token, started=True)) == (0, 1)
    record = db.task("a")
    assert (record["state"], record["lost"], record["error"]) == (
        "dead", str(POISON), "quarantined")
    assert "worker" not in record
    assert db.leases() == set()
    assert db.client.zscore(db.keys.dlq, "a") is not None
    assert db.queued() == {}
    assert db.inflight() == "0"
    # It waits in the dlq: its flow and its dependents are left as they are.
    assert db.state("b") == "pending"
    assert db.flow("remaining") == "2"


def test_reap_never_quarantines_a_task_that_was_only_waiting(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", lost=5)
    token = db.lease("a")["a"]
    assert db.reap(LeasedTask("a", Q, token, started=False), threshold=1) == (1, 0)
    assert (db.state("a"), db.field(db.keys.task("a"), "lost")) == ("queued", "5")


def test_reap_refuses_when_the_worker_heartbeat_is_newer_than_the_cutoff(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    cutoff = db.now_ms() - 60_000  # the heartbeat came after this
    record = db.task("a")
    assert db.reap(LeasedTask("a", Q, token), seen_before_ms=cutoff) == (-2, 0)
    assert db.task("a") == record
    assert (db.queued(), db.leases(), db.inflight()) == ({}, {f"a|{token}"}, "1")
    assert db.client.exists(db.keys.worker(W), db.keys.inbox(W), db.keys.leases(W)) == 3
    assert db.client.zscore(db.keys.workers, W) is not None


def test_reap_without_a_cutoff_takes_back_a_worker_that_deregistered(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    # Its heartbeat is fresh, but it said it is gone (x|worker): reap regardless.
    assert db.reap(LeasedTask("a", Q, token), seen_before_ms=0) == (1, 0)
    assert db.queued() == {"a": 1000.0}
    assert db.client.zscore(db.keys.workers, W) is None


def test_reap_refuses_a_wrong_leader_token(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    record = db.task("a")
    assert db.reap(LeasedTask("a", Q, token), leader="7|other") == (-1, 0)
    assert db.task("a") == record
    assert (db.queued(), db.leases(), db.inflight()) == ({}, {f"a|{token}"}, "1")
    assert db.client.exists(db.keys.inbox(W), db.keys.leases(W)) == 2


def test_reap_leaves_a_task_leased_again_since(db: Db) -> None:
    db.put_task("a")
    old = db.lease("a")["a"]
    assert db.reap(LeasedTask("a", Q, old, started=True)) == (1, 0)
    db.register("w2")
    new = db.lease("a", worker="w2", prefix="1.2")["a"]
    db.register(W)  # the presumed-dead worker comes back and is reaped again
    assert db.reap(LeasedTask("a", Q, old, started=True)) == (0, 0)
    record = db.task("a")
    assert (record["state"], record["lost"]) == ("queued", "1")
    assert "worker" not in record
    assert db.queued() == {}
    assert db.leases("w2") == {f"a|{new}"}
    assert db.inflight() == "1"


def test_reap_leaves_a_task_its_worker_acknowledged_after_the_snapshot(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    snapshot = [LeasedTask(t, Q, tokens[t], started=True) for t in ("a", "b")]
    assert db.ack("a", tokens["a"], result=b"ok")  # between the snapshot and the reap
    completed = db.task("a")
    assert db.reap(*snapshot) == (1, 0)
    assert db.task("a") == completed
    assert completed["state"] == "completed"
    assert db.queued() == {"b": 1000.0}
    assert db.inflight() == "0"
    assert (db.flow("remaining"), db.field(db.keys.task("b"), "lost")) == ("1", "1")


def test_reap_leaves_a_task_its_worker_failed_after_the_snapshot(db: Db) -> None:
    db.put_flow(2)
    db.put_task("r", retries=1, retry_delay=60.0)
    db.put_task("c")
    tokens = db.lease("r", "c")
    snapshot = [LeasedTask(t, Q, tokens[t], started=True) for t in ("r", "c")]
    assert db.fail("r", tokens["r"]) == FAIL_RETRIED
    assert db.fail("c", tokens["c"], "crash") == FAIL_RETRIED
    records = {t: db.task(t) for t in "rc"}
    assert db.reap(*snapshot) == (0, 0)
    assert {t: db.task(t) for t in "rc"} == records
    assert (records["r"]["state"], records["c"]["lost"]) == ("retrying", "1")
    assert db.queued() == {"c": 1000.0}
    assert db.inflight() == "0"


def test_reap_removes_only_the_dead_worker_s_deadline_members(db: Db) -> None:
    db.put_task("a", timeout=5)
    db.put_task("b", timeout=5)
    db.register("w2")
    mine = db.lease("a")["a"]
    theirs = db.lease("b", worker="w2", prefix="1.2")["b"]
    assert db.reap(LeasedTask("a", Q, mine, started=True)) == (1, 0)
    assert db.deadlines() == {f"b|w2|{theirs}"}
    assert db.leases("w2") == {f"b|{theirs}"}


# -- dlq -----------------------------------------------------------------------------------


@pytest.fixture
def quarantined(db: Db) -> Db:
    db.put_flow(2)
    db.put_task("a", lost=POISON - 1, score=4.0, children=[Child("b", Q, 1.0)])
    db.put_task("b", state="pending", upstream=1)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "crash") == FAIL_QUARANTINED
    db.client.delete(db.keys.wake)
    return db


def test_dlq_retry_queues_a_quarantined_task_with_its_losses_forgiven(quarantined: Db) -> None:
    db = quarantined
    assert db.scripts.dlq_retry("a", Q) is True
    record = db.task("a")
    assert (record["state"], record["lost"]) == ("queued", "0")
    assert db.queued() == {"a": 4.0}
    assert db.client.zcard(db.keys.dlq) == 0
    assert db.wake() == [signals.SUBMITTED]
    assert db.scripts.dlq_retry("a", Q) is False
    assert db.wake() == [signals.SUBMITTED]


def test_dlq_purge_fails_a_quarantined_task_for_good(quarantined: Db) -> None:
    db = quarantined
    assert db.scripts.dlq_purge("a", FLOW, TTL) is True
    record = db.task("a")
    assert (record["state"], record["error"]) == ("failed", "boom")
    assert 0 < db.client.pttl(db.keys.task("a")) <= TTL
    assert db.client.zcard(db.keys.dlq) == 0
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["a"]
    assert db.wake() == [signals.CASCADE]
    assert (db.flow("failed"), db.flow("remaining")) == ("1", "1")
    assert db.scripts.dlq_purge("a", FLOW, TTL) is False
    assert (db.flow("failed"), db.flow("remaining")) == ("1", "1")


def test_dlq_operations_leave_a_task_that_is_not_quarantined(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", score=4.0)
    assert db.scripts.dlq_retry("a", Q) is False
    assert db.scripts.dlq_purge("a", FLOW, TTL) is False
    assert (db.state("a"), db.queued()) == ("queued", {"a": 4.0})
    assert db.flow("remaining") == "1"
    assert db.wake() == []


# -- release -------------------------------------------------------------------------------


def test_release_hands_back_inbox_entries_at_their_place(db: Db) -> None:
    db.put_task("a", score=1.0)
    db.put_task("b", score=2.0)
    tokens = db.lease("a", "b")
    entry = db.inbox()[0]
    assert entry.task_id == "a"

    released = db.scripts.release(
        W, [LeasedTask("a", Q, tokens["a"], inbox_entry=entry.raw)])
    assert released == 1
    assert db.queued() == {"a": 1.0}
    record = db.task("a")
    assert record["state"] == "queued"
    assert "worker" not in record
    assert "lease" not in record
    assert [lease.task_id for lease in db.inbox()] == ["b"]
    assert db.leases() == {f"b|{tokens['b']}"}
    assert db.inflight() == "1"
    assert db.wake() == [signals.SUBMITTED]


def test_release_leaves_a_task_whose_entry_the_worker_took_meanwhile(db: Db) -> None:
    db.put_task("a", score=1.0)
    token = db.lease("a")["a"]
    [entry] = db.inbox()
    db.client.lpop(db.keys.inbox(W))  # a slot took it between the read and the release
    assert db.scripts.release(W, [LeasedTask("a", Q, token, inbox_entry=entry.raw)]) == 0
    assert db.leases() == {f"a|{token}"}  # still leased: the worker runs it
    assert db.queued() == {}


def test_release_hands_back_a_running_task_the_worker_lost_track_of(db: Db) -> None:
    db.put_task("a", score=1.0, timeout=10)
    token = db.lease("a")["a"]
    db.client.delete(db.keys.inbox(W))  # popped before the reply was lost
    db.scripts.mark_running(W, [("a", token)])
    assert db.deadline("a", token) is not None
    assert db.scripts.release(W, [LeasedTask("a", Q, token)]) == 1
    assert db.queued() == {"a": 1.0}
    record = db.task("a")
    assert (record["state"], record["lost"]) == ("queued", "0")
    assert "worker" not in record
    assert db.deadlines() == set()
    assert db.leases() == set()
    assert db.inflight() == "0"


def test_release_ignores_tasks_the_worker_no_longer_holds(db: Db) -> None:
    db.put_flow(2)
    db.put_task("done")
    db.put_task("theirs")
    mine = db.lease("done")
    assert db.ack("done", mine["done"])
    db.register("w2")
    theirs = db.lease("theirs", worker="w2", prefix="1.2")
    [their_entry] = db.inbox("w2")
    db.client.delete(db.keys.wake)

    released = db.scripts.release(W, [
        LeasedTask("done", Q, mine["done"]),
        LeasedTask("theirs", Q, theirs["theirs"], inbox_entry=their_entry.raw),
    ])
    assert released == 0
    assert (db.state("done"), db.state("theirs")) == ("completed", "queued")
    assert db.queued() == {}
    assert db.inbox("w2") == [their_entry]
    assert db.leases("w2") == {their_entry.member}
    assert db.inflight() == "1"
    assert db.wake() == []


def test_assign_reports_how_many_deadlines_it_set(db: Db) -> None:
    db.put_task("slow", timeout=2.5)
    db.put_task("free", score=1.0)
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "1.9", ["slow", "free"]) == (2, 2, 0, 1)


def test_leases_of_a_queue_without_a_limit_are_not_counted_anywhere(db: Db) -> None:
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t, retries=1)
    tokens = db.lease("a", "b", "c", "d", prefix="1.1u")
    assert all("u" in token for token in tokens.values())
    assert db.inflight() is None
    assert db.ack("a", tokens["a"]) is True
    assert db.fail("b", tokens["b"]) == FAIL_RETRIED
    assert db.scripts.release(W, [LeasedTask("c", Q, tokens["c"])]) == 1
    assert db.reap(LeasedTask("d", Q, tokens["d"], started=True)) == (1, 0)
    assert db.inflight() is None  # never written, never decremented below zero


def test_counted_and_uncounted_leases_keep_the_count_of_the_counted_ones(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b", score=1.0)
    counted = db.lease("a", prefix="1.1")
    uncounted = db.lease("b", prefix="1.2u")
    assert db.inflight() == "1"
    assert db.ack("b", uncounted["b"]) is True
    assert db.inflight() == "1"
    assert db.ack("a", counted["a"]) is True
    assert db.inflight() == "0"


# -- offer ---------------------------------------------------------------------------------

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
    offer = offer or signals.Offer(db.leader.split("|")[0], ((W, 4, 0.0),))
    worker, _ = submit(db, *task_ids, offer=offer, timeout=timeout)
    return len(task_ids) if worker == W else 0 if worker == "" else -1


def stand(db: Db, offer: signals.Offer | None = None) -> signals.Offer:
    offer = offer or signals.Offer(db.leader.split("|")[0], ((W, 4, 0.0),))
    db.client.set(db.keys.offer(Q), offer.encode())
    return offer


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
    offer = stand(db, signals.Offer(db.leader.split("|")[0], ((W, 4, 0.0),), ("hi",)))
    if spoil == "offer replaced":
        stand(db, signals.Offer(offer.epoch, (("w2", 4, 0.0),)))
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


def offer_to(db: Db, *workers: tuple[str, int, float], tasks: str = "ab") -> str:
    """Submit ``tasks`` taking an offer of ``workers``; the worker they went to."""
    offer = stand(db, signals.Offer(db.leader.split("|")[0], workers))
    worker, _ = submit(db, *tasks, offer=offer)
    return worker


def test_an_offer_leases_to_a_live_offered_worker_with_free_slots(db: Db) -> None:
    db.register("w2")
    db.client.delete(db.keys.wake)
    db.client.sadd(db.keys.leases(W), "busy|t")  # W's only slot is taken
    assert offer_to(db, (W, 1, 0.0), ("gone", 4, 0.0), ("w2", 2, 0.0)) == "w2"
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
    assert offer_to(db, (W, 4, 0.0), ("w2", 4, w2_host), tasks="a") == chosen


def test_a_worker_above_its_refill_point_gets_no_lease_however_the_caller_counted(
        db: Db) -> None:
    db.put_flow(3)
    for t in "abc":
        db.put_task(t)
    db.client.sadd(db.keys.leases(W), *[f"x{i}|t" for i in range(10)])
    # 16 places, 10 held: 6 free, under the refill point of 8
    assert db.scripts.assign(db.leader, W, Q, 16, GRACE, "1.1u", ["a"], 8) == (0, 10, 0, 0)
    assert db.scripts.assign(db.leader, W, Q, 16, GRACE, "1.2u", ["a", "b"], 6) == (2, 12, 0, 0)
