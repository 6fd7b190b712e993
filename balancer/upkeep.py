"""The dispatcher's upkeep of Redis state, apart from handing out work: retries that are
due, dependents of failed tasks, leases past their deadline, workers that died.

Each method does its reads and calls its script, and returns what the dispatcher needs
to know; the dispatcher decides when to call them and keeps its own picture.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Literal, TypeVar

import redis

from balancer.common import aside, codec, signals
from balancer.common.codec import ErrorInfo
from balancer.common.keys import Keys
from balancer.common.models import TaskState
from balancer.common.replies import as_bytes_list, as_opt_bytes, as_opt_bytes_list, as_scored
from balancer.common.retry import is_outage
from balancer.common.scripts import FAIL_REFUSED, LeasedTask, Scripts
from balancer.common.settings import Settings
from balancer.setaside import SetAside

log = logging.getLogger("balancer.dispatcher")

BATCH = 500
CASCADE_BATCH = 100

T = TypeVar("T")


class Upkeep:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts,
                 settings: Settings, set_aside: SetAside | None = None) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.settings = settings
        self.set_aside = set_aside or SetAside(scripts, lambda: 0.0)
        self.ttl_ms = int(settings.result_ttl * 1000)
        # The keys read a batch at a time from their head (``_move_aside``): their type, and
        # what they hold, for the set-aside records.
        self._read_in_batches: dict[str, tuple[Literal["zset", "list"], str]] = {
            keys.delayed: ("zset", "the set of tasks waiting for a retry or a later start"),
            keys.deadlines: ("zset", "the leases watched for their timeout"),
            keys.cascade: ("list", "the list of failed tasks whose dependents wait to be"
                                   " failed")}

    def task_fields(self, task_ids: list[str], *names: str) -> list[list[str | None]]:
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hmget(self.keys.task(task_id), list(names))
        return [[v.decode() if v is not None else None for v in as_opt_bytes_list(row)]
                for row in pipe.execute()]

    def promote(self, now_ms: float) -> tuple[int, float]:
        """Queue the retries and delayed starts due by ``now_ms``: (how many, when the next
        one is due). A member that is not a task id (not UTF-8), or whose task's record
        Redis refuses to read or move (not a hash), is set aside: read a batch at a time
        from the earliest, the set would otherwise stall behind it for good."""
        entries = as_scored(self.client.zrange(self.keys.delayed, 0, BATCH - 1,
                                               withscores=True))
        later = [score for _, score in entries if score > now_ms]
        # A whole batch due: more may be due behind it, look again at once.
        next_due = now_ms if len(entries) == BATCH and not later else min(
            later, default=float("inf"))
        due: list[tuple[str, float]] = []
        for member, score in entries:
            if score > now_ms:
                continue
            try:
                due.append((member.decode(), score))
            except UnicodeDecodeError:
                self._move_aside(self.keys.delayed, aside.UNREADABLE, member,
                                 "not a task id (not UTF-8)", score)
        if not due:
            return 0, next_due
        pipe = self.client.pipeline(transaction=False)
        for task_id, _ in due:
            pipe.hget(self.keys.task(task_id), "queue")
        pairs: list[tuple[str, str]] = []
        for (task_id, score), queue in zip(due, pipe.execute(raise_on_error=False)):
            if isinstance(queue, redis.ResponseError) and not is_outage(queue):
                self._move_aside(self.keys.delayed, aside.kind_of(queue), task_id.encode(),
                                 f"its record cannot be read: {queue}", score)
            elif isinstance(queue, Exception):
                raise queue
            else:
                pairs.append((task_id, queue.decode(errors="replace") if queue else "default"))
        moved = self._promote(pairs, dict(due))
        if moved:
            log.info("queued %d tasks whose delay passed (retries, delayed starts): %s",
                     moved, ",".join(t for t, _ in pairs[:10]))
        if moved < len(pairs):
            # Some are still there, at a new time: those whose queue is a key of another
            # type wait parked (promote.lua), due again in a while. When that is, is read
            # anew: the times read above no longer say it, and a dispatcher told of no
            # later entry would never look again, the task parked for good once its queue
            # was fixed.
            head = as_scored(self.client.zrange(self.keys.delayed, 0, 0, withscores=True))
            next_due = min([next_due, *(max(score, now_ms) for _, score in head)])
        return moved, next_due

    def _promote(self, pairs: list[tuple[str, str]], scores: dict[str, float]) -> int:
        """promote.lua on the batch; when Redis refuses it for a task's data, one task at a
        time, the refused ones set aside."""
        if not pairs:
            return 0
        try:
            return self.scripts.promote(pairs)
        except redis.ResponseError as exc:
            if is_outage(exc):
                raise
            if len(pairs) > 1:  # which one: a task at a time
                return sum(self._promote([pair], scores) for pair in pairs)
            task_id = pairs[0][0]
            self._move_aside(self.keys.delayed, aside.kind_of(exc), task_id.encode(),
                             f"queueing it failed: {exc}", scores[task_id])
            return 0

    def _move_aside(self, key: str, kind: str, member: bytes, why: str,
                    score: float | None = None) -> None:
        """Take a ``member`` that cannot be used out of ``key``, into the set-aside records.
        These keys are read a batch at a time from their head: left there, it would hold
        up everything behind it for good."""
        source_type, holds = self._read_in_batches[key]
        self.set_aside.move(kind, key, source_type, member, f"{why}; taken out of {holds}",
                            score=score)

    def _guarded(self, key: str, member: bytes, what: str, job: Callable[[str], T]) -> T | None:
        """``job`` on the entry ``member`` of ``key``; None, the entry set aside, when it is
        not UTF-8 or Redis refuses the job for its data (an outage is raised)."""
        try:
            text = member.decode()
        except UnicodeDecodeError:
            self._move_aside(key, aside.UNREADABLE, member, f"not {what} (not UTF-8)")
            return None
        try:
            return job(text)
        except redis.ResponseError as exc:
            if is_outage(exc):
                raise
            self._move_aside(key, aside.kind_of(exc), member, f"{what} {text}: {exc}")
            return None

    def cascade(self) -> bool:
        """Fail the dependents of failed tasks, a batch at a time; True if more remain.
        An entry that cannot be used (not UTF-8, or its task's record of the wrong type) is
        set aside: left at the head of the list, it would hold up every failure behind it."""
        members = as_bytes_list(self.client.lrange(self.keys.cascade, 0, CASCADE_BATCH - 1))
        more = len(members) == CASCADE_BATCH
        for member in members:
            n = self._guarded(self.keys.cascade, member, "a failed task", self._cascade_one)
            more = more or (n or 0) > 0
        return more

    def _cascade_one(self, failed_id: str) -> int:
        flow, name, state = self.task_fields([failed_id], "flow", "name", "state")[0]
        blob = as_opt_bytes(self.client.hget(self.keys.task(failed_id), "children"))
        try:
            entries = codec.unpack(blob) if blob else []
            children = [str(c[0]) for c in entries]
            gated = {str(c[0]) for c in entries if len(c) > 3 and c[3]}
        except (codec.CodecError, TypeError, IndexError):
            log.error("task=%s: unreadable list of dependents; they are not failed",
                      failed_id)
            children, gated = [], set()
        skipped = state == TaskState.SKIPPED
        error = (ErrorInfo("balancer.UpstreamSkipped", f"upstream task {name} ({failed_id})"
                           " was skipped") if skipped else
                 ErrorInfo("balancer.UpstreamFailed",
                           f"upstream task {name} ({failed_id}) did not complete"))
        n = self.scripts.cascade(failed_id, flow or "", codec.pack_error(error), children,
                                 self.ttl_ms, gated, skipped)
        log.info("task=%s %s: %d dependents settled or counted", failed_id,
                 "skipped" if skipped else "failed", n)
        return n

    def expire_overdue(self, now_ms: float) -> bool:
        """Fail leases that outlived their task's timeout plus grace without an ack, even
        if their worker still heartbeats. True while deadlines remain to watch."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrangebyscore(self.keys.deadlines, "-inf", now_ms, start=0, num=BATCH)
        pipe.zcard(self.keys.deadlines)
        due, pending = pipe.execute()
        if not due:
            return bool(pending)
        error = codec.pack_error(ErrorInfo(
            "TimeoutError", f"no acknowledgement within the task's timeout plus"
                            f" {self.settings.timeout_grace}s; its worker is presumed stuck"))
        expire = functools.partial(self._expire, error=error)
        for member in due:
            self._guarded(self.keys.deadlines, member, "an overdue lease", expire)
        return True

    def _expire(self, lease: str, error: bytes) -> None:
        task_id, _, rest = lease.partition("|")
        worker, _, token = rest.partition("|")
        flow, queue = self.task_fields([task_id], "flow", "queue")[0]
        code = FAIL_REFUSED
        if worker and token and queue:
            code = self.scripts.fail(worker, token, task_id, queue, flow or "", error,
                                     "retry", self.ttl_ms, self.settings.poison_threshold)
        if code == FAIL_REFUSED:  # settled meanwhile, or not a lease any more
            self.client.zrem(self.keys.deadlines, lease)
        else:
            log.warning("task=%s on worker=%s overdue: failed by the dispatcher", task_id,
                        worker)

    def reap(self, leader_token: str, worker_id: str, seen_before_ms: int,
             left: bool = False) -> tuple[int, int, list[str]]:
        """Take back a dead worker's tasks: (requeued, quarantined, task ids); requeued is
        -1 when we no longer lead, -2 when the worker turned out to be alive."""
        pipe = self.client.pipeline(transaction=True)
        pipe.smembers(self.keys.leases(worker_id))
        pipe.lrange(self.keys.inbox(worker_id), 0, -1)
        pipe.hvals(self.keys.ahead(worker_id))
        members, inbox, fields = pipe.execute()
        leases = sorted(p for p in map(signals.parse_lease_member, members) if p is not None)
        waiting = {lease.task_id for lease in map(signals.parse_lease, inbox) if lease}
        taken_ahead = set(signals.parse_ahead(fields))  # by pool children: maybe started
        ids = [task_id for task_id, _ in leases]
        tasks = []
        for (task_id, token), (queue,) in zip(leases, self.task_fields(ids, "queue")):
            if queue is None:
                log.error("worker=%s held task=%s whose record is gone; dropping the lease",
                          worker_id, task_id)
                continue
            ahead = task_id not in waiting and (task_id, token) in taken_ahead
            tasks.append(LeasedTask(task_id, queue, token, started=task_id not in waiting
                                    and not ahead, ahead=ahead))
        error = ErrorInfo("balancer.PoisonTask",
                          f"the task was running on a worker that died"
                          f" {self.settings.poison_threshold} times; quarantined")
        requeued, dead = self.scripts.reap(leader_token, worker_id, seen_before_ms,
                                           self.settings.poison_threshold,
                                           codec.pack_error(error), tasks, left)
        return requeued, dead, ids
