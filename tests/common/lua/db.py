"""What the tests of the Lua scripts share: ``Db``, the scripts (common/lua/*.lua) driven
through common.scripts.Scripts on one Redis (fakeredis or the real one, see conftest.py),
with task and flow hashes laid out as balancer/submit.py writes them, and the tests'
defaults.

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

import redis
from balancer.common import codec, signals
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.scripts import Child, Done, FailMode, LeasedTask, Scripts
from balancer.common.signals import Lease

Q = "q"
FLOW = "f1"
TTL = 60_000
GRACE = 5_000
POISON = 3
W = "w1"
PREFIX = "1.1"  # lease token prefix, "<leader epoch>.<assign batch>" as the dispatcher builds it
STARTED = 1_700_000_000_000
FINISHED = STARTED + 2_500  # the worker's reckoning at the ack: the script sends it on
NEVER = 1_000_000_000  # the unmet count cascade.lua gives dependents of a failed task


@dataclass
class Db:
    """The scripts on one Redis, with the leader lease taken and worker W registered."""

    client: redis.Redis
    keys: Keys
    scripts: Scripts
    leader: str

    @classmethod
    def open(cls, client: redis.Redis, namespace: str) -> Db:
        """The leader lease taken by "dispatcher-1", worker W registered, the wake list
        empty."""
        keys = Keys(namespace)
        scripts = Scripts(client, keys)
        leader = scripts.leader("dispatcher-1", TTL)
        assert leader is not None
        scripts.heartbeat(W, WorkerInfo(W, (Q,), 4).to_blob(), TTL)
        client.delete(keys.wake)
        return cls(client, keys, scripts, leader)

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
        retry_delay: float | str = 0.0,
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
              prefix: str = PREFIX, depth: int = 1) -> dict[str, str]:
        """Assign every id to ``worker`` (each entry carrying the prefetch ``depth``);
        return {task id: lease token}, read off the members the call added to the
        worker's leases set."""
        held = self.leases(worker)
        n, *_ = self.scripts.assign(self.leader, worker, queue, capacity, GRACE, prefix,
                                    task_ids, depth=depth)
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

    @staticmethod
    def inbox_leases(entries: Sequence[bytes]) -> list[Lease]:
        """Inbox entries as the worker reads them."""
        leases = [signals.parse_lease(raw) for raw in entries]
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


def take_batch(db: Db) -> tuple[dict[str, str], list[Lease]]:
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

