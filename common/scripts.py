"""Typed wrappers around the Lua scripts in ``common/lua``: the only way code changes state.

Each script is registered once per client (EVALSHA, with redis-py reloading it after a
server restart) and every key it touches is passed through KEYS, built by ``Keys``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import redis

from common.keys import Keys

WAKE_CAP = 10_000

FailMode = Literal["retry", "final", "crash"]
FAIL_REFUSED, FAIL_FAILED, FAIL_RETRIED, FAIL_QUARANTINED = 0, 1, 2, 3


@cache
def _source(name: str) -> str:
    lua = resources.files("common") / "lua"
    return (lua / "_prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True)
class Child:
    """A dependent of a task, as the completing worker must name it."""

    task_id: str
    queue: str


@dataclass(frozen=True)
class LeasedTask:
    """A leased task the reaper or the releasing worker takes back."""

    task_id: str
    queue: str
    inbox_entry: str = ""


class Scripts:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._scripts: dict[str, Any] = {}

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any], client: Any = None) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(_source(name))
        return script(keys=list(keys), args=list(args), client=client)

    # -- dispatcher -----------------------------------------------------------------

    def leader(self, dispatcher_id: str, ttl_ms: int) -> str | None:
        token = self._run("leader", [self.keys.leader, self.keys.epoch], [dispatcher_id, ttl_ms])
        return token.decode() if token else None

    def assign(
        self, token: str, worker_id: str, queue: str, capacity: int, task_ids: Sequence[str]
    ) -> tuple[int, int, int]:
        """(assigned, tasks leased to the worker now, ids dropped for lack of a record)."""
        k = self.keys
        n, leased, dropped = self._run(
            "assign",
            [k.leader, k.worker(worker_id), k.inbox(worker_id), k.leases(worker_id),
             k.inflight, k.queue(queue), *(k.task(t) for t in task_ids)],
            [token, worker_id, queue, capacity, *task_ids],
        )
        return int(n), int(leased), int(dropped)

    def promote(self, due: Sequence[tuple[str, str]]) -> int:
        """Queue due retries; ``due`` holds (task id, queue name) pairs."""
        k = self.keys
        keys = [k.delayed]
        for task_id, queue in due:
            keys += [k.task(task_id), k.queue(queue)]
        return int(self._run("promote", keys, [t for t, _ in due]))

    def cascade(
        self, failed_id: str, flow_id: str, error: bytes, children: Sequence[str], ttl_ms: int
    ) -> int:
        k = self.keys
        return int(self._run(
            "cascade",
            [k.cascade, k.flow(flow_id), k.flow_done(flow_id), *(k.task(c) for c in children)],
            [failed_id, ttl_ms, error, *children],
        ))

    def reap(
        self,
        token: str,
        worker_id: str,
        seen_before_ms: int,
        poison_threshold: int,
        quarantine_error: bytes,
        tasks: Sequence[LeasedTask],
    ) -> tuple[int, int]:
        k = self.keys
        keys = [k.leader, k.worker(worker_id), k.workers, k.inbox(worker_id),
                k.leases(worker_id), k.inflight, k.dlq, k.deadlines]
        for t in tasks:
            keys += [k.task(t.task_id), k.queue(t.queue)]
        requeued, dead = self._run(
            "reap", keys,
            [token, worker_id, seen_before_ms, poison_threshold, quarantine_error,
             *(t.task_id for t in tasks)],
        )
        return int(requeued), int(dead)

    # -- worker ---------------------------------------------------------------------

    def heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> tuple[bool, int]:
        k = self.keys
        existed, leased = self._run(
            "heartbeat",
            [k.worker(worker_id), k.workers, k.leases(worker_id), k.wake],
            [worker_id, info, ttl_ms, WAKE_CAP],
        )
        return bool(existed), int(leased)

    def start(self, task_id: str, worker_id: str, attempt: int, grace_ms: int
              ) -> list[bytes | None] | None:
        """The spec {fn, args, timeout, queue, flow, children, name}, or None if stale."""
        result = self._run("start", [self.keys.task(task_id), self.keys.deadlines],
                           [worker_id, attempt, grace_ms])
        return list(result) if result else None

    def complete(
        self,
        task_id: str,
        worker_id: str,
        attempt: int,
        flow_id: str,
        result: bytes,
        children: Sequence[Child],
        ttl_ms: int,
    ) -> bool:
        k = self.keys
        keys = [k.task(task_id), k.leases(worker_id), k.inflight, k.flow(flow_id),
                k.flow_done(flow_id), k.wake, k.deadlines]
        for c in children:
            keys += [k.task(c.task_id), k.queue(c.queue)]
        return bool(self._run(
            "complete", keys,
            [worker_id, attempt, task_id, result, ttl_ms, *(c.task_id for c in children)],
        ))

    def fail(
        self,
        task_id: str,
        worker_id: str,
        attempt: int,
        flow_id: str,
        queue: str,
        error: bytes,
        mode: FailMode,
        ttl_ms: int,
        poison_threshold: int,
    ) -> int:
        """FAIL_RETRIED: retry scheduled or re-queued; FAIL_QUARANTINED; FAIL_FAILED: failed
        for good; FAIL_REFUSED: the lease moved on, nothing changed."""
        k = self.keys
        return int(self._run(
            "fail",
            [k.task(task_id), k.leases(worker_id), k.inflight, k.flow(flow_id),
             k.flow_done(flow_id), k.wake, k.delayed, k.cascade, k.deadlines, k.queue(queue),
             k.dlq],
            [worker_id, attempt, task_id, error, ttl_ms, mode, poison_threshold],
        ))

    def dlq_retry(self, task_id: str, queue: str) -> bool:
        k = self.keys
        return bool(self._run("dlq_retry", [k.dlq, k.task(task_id), k.queue(queue), k.wake],
                              [task_id]))

    def dlq_purge(self, task_id: str, flow_id: str, ttl_ms: int) -> bool:
        k = self.keys
        return bool(self._run(
            "dlq_purge",
            [k.dlq, k.task(task_id), k.flow(flow_id), k.flow_done(flow_id), k.cascade, k.wake],
            [task_id, ttl_ms]))

    def release(self, worker_id: str, tasks: Sequence[LeasedTask]) -> int:
        k = self.keys
        keys = [k.inbox(worker_id), k.leases(worker_id), k.inflight, k.wake, k.deadlines]
        args: list[Any] = [worker_id]
        for t in tasks:
            keys += [k.task(t.task_id), k.queue(t.queue)]
            args += [t.inbox_entry, t.task_id]
        return int(self._run("release", keys, args))
