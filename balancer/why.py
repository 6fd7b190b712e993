""""Why is this waiting?": for a task that has not finished, what holds it.

``reason`` is a pure function over facts read from Redis in one pipelined pass
(``Facts.gather``), so it is tested without Redis and shared by ``balancer status``,
``balancer flow`` and ``FlowRun.why``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from balancer.common import aside, protocol
from balancer.common.connection import server_time_ms
from balancer.common.keys import Keys
from balancer.common.models import QueueConfig, TaskState, WorkerInfo, visible_state
from balancer.common.replies import field_tags
from balancer.common.retry import is_outage
from balancer.scheduling import ALL_QUEUES
from balancer.taglimits import limit_rows


@dataclass(frozen=True)
class TaskFacts:
    state: str
    queue: str
    deps: int = 0
    worker: str = ""
    retry_due_in: float | None = None  # seconds: of a retry, or of a delayed start
    ahead: int | None = 0  # tasks ahead of it in its queue; None: not in its queue
    in_gate: bool = False  # a gated task (a map, a trigger) the dispatcher is to decide
    mapped: int = 0  # a map that expanded: how many runs it has
    tags: tuple[str, ...] = ()


@dataclass
class ClusterFacts:
    workers: list[WorkerInfo] = field(default_factory=list)  # live workers
    leased: dict[str, int] = field(default_factory=dict)  # worker id -> leases held
    configs: dict[str, QueueConfig] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)
    leader: str | None = None
    tag_limits: dict[str, int] = field(default_factory=dict)
    tag_leased: dict[str, int] = field(default_factory=dict)  # leases counted per tag

    @classmethod
    def gather(cls, client: redis.Redis, keys: Keys) -> ClusterFacts:
        pipe = client.pipeline(transaction=False)
        pipe.zrange(keys.workers, 0, -1)
        pipe.smembers(keys.queues)
        pipe.hgetall(keys.inflight)
        pipe.get(keys.leader)
        pipe.hgetall(keys.tag_limits)
        pipe.hgetall(keys.tag_inflight)
        ids, queues, inflight, leader, tag_limits, tag_leased = pipe.execute()
        names = sorted(aside.readable(queues))  # the dispatcher sets the others aside
        pipe = client.pipeline(transaction=False)
        for wid in ids:
            pipe.hget(keys.worker(wid.decode()), "info")
            pipe.scard(keys.leases(wid.decode()))
        for q in names:
            pipe.hgetall(keys.queue_conf(q))
        replies = pipe.execute()
        facts = cls(leader=leader.decode() if leader else None,
                    inflight={k.decode(): int(v) for k, v in inflight.items()})
        tags = limit_rows(tag_limits, tag_leased)
        facts.tag_limits = {t.name: t.limit for t in tags if t.limit is not None}
        facts.tag_leased = {t.name: t.leased for t in tags}
        for i in range(len(ids)):
            blob, leased = replies[2 * i], replies[2 * i + 1]
            info = WorkerInfo.readable(blob)
            if info is not None:
                facts.workers.append(info)
                facts.leased[info.id] = int(leased)
        offset = 2 * len(ids)
        facts.configs = {q: QueueConfig.from_hash(q, replies[offset + j])
                         for j, q in enumerate(names)}
        return facts

    def serving(self, queue: str, release: bool = True) -> list[WorkerInfo]:
        """The workers serving ``queue``: of this code's release (those of another get no
        tasks from its dispatcher: common/protocol.py), or of any with ``release=False``."""
        return [w for w in self.workers if (queue in w.queues or ALL_QUEUES in w.queues)
                and (not release or not protocol.other_release(w.protocol))]


def queue_hold(queue: str, cluster: ClusterFacts) -> str | None:
    """What keeps a queue's ready tasks from being handed out, or None if nothing does."""
    config = cluster.configs.get(queue, QueueConfig(queue))
    if config.paused:
        return f"queue {queue} is paused (balancer queue resume {queue})"
    serving = cluster.serving(queue)
    if not serving:
        others = cluster.serving(queue, release=False)
        if others:
            return (f"only workers of another release serve queue {queue}"
                    f" ({', '.join(sorted(w.id for w in others))}): a dispatcher leases"
                    " nothing to a worker of another release (README, \"Upgrading\")")
        return f"no worker serves queue {queue} (worker start --queue {queue})"
    if config.concurrency_limit is not None:
        used = cluster.inflight.get(queue, 0)
        if used >= config.concurrency_limit:
            return (f"queue {queue} is at its concurrency limit"
                    f" ({used}/{config.concurrency_limit} leased)")
    if all(cluster.leased.get(w.id, 0) >= w.capacity for w in serving):
        return f"all {len(serving)} workers serving queue {queue} are full"
    if cluster.leader is None:
        return "no dispatcher is running (balancer serve)"
    return None


def tag_hold(tags: Iterable[str], cluster: ClusterFacts) -> str | None:
    """The first tag of a queued task that is at its limit, in words; None if none is."""
    for tag in tags:
        limit = cluster.tag_limits.get(tag)
        used = cluster.tag_leased.get(tag, 0)
        if limit is not None and used >= limit:
            return (f"tag {tag} is at its concurrency limit ({used}/{limit} leased;"
                    f" balancer tag ls)")
    return None


def reason(task: TaskFacts, cluster: ClusterFacts) -> str:
    """Why the task is where it is, in words; empty for a finished task."""
    state = task.state
    if state in TaskState.TERMINAL - {TaskState.DEAD}:
        return ""
    if state == TaskState.DEAD:
        return "quarantined after killing its workers (balancer dlq ls)"
    if state == TaskState.PENDING and task.deps > 0:
        return f"waiting for {task.deps} upstream task{'s' if task.deps != 1 else ''}"
    if state in (TaskState.RETRYING, TaskState.SCHEDULED):
        what = "retry delay" if state == TaskState.RETRYING else "its run starts later"
        return f"{what}: due in {max(0.0, task.retry_due_in or 0.0):.1f}s"
    if state == TaskState.RUNNING and task.mapped:
        return (f"mapped into {task.mapped} runs, {task.deps} not finished"
                if task.deps > 0 else "its mapped runs finished: results being gathered")
    if state == TaskState.RUNNING:
        return f"running on worker {task.worker}"
    if task.retry_due_in is not None:  # parked: a script's enqueue was refused
        return (f"its queue {task.queue} cannot take it, the key holds another type"
                " (balancer dlq aside): it waits until that is fixed")
    if task.in_gate:
        if cluster.leader is None:
            return "no dispatcher is running (balancer serve)"
        return "upstream tasks settled: the dispatcher applies its trigger or expands its map"
    if task.ahead is None:
        return "leased to a worker: in its inbox or just started"
    hold = queue_hold(task.queue, cluster) or tag_hold(task.tags, cluster)
    if hold:
        return hold
    return f"next in line in queue {task.queue}" if task.ahead == 0 else \
        f"{task.ahead} tasks ahead of it in queue {task.queue}"


def task_facts(client: redis.Redis, keys: Keys, task_ids: Iterable[str]
               ) -> dict[str, TaskFacts]:
    ids = list(task_ids)
    pipe = client.pipeline(transaction=False)
    for t in ids:
        pipe.hmget(keys.task(t), ["state", "queue", "deps", "worker", "mapped", "tags"])
    records = pipe.execute()
    now_ms = server_time_ms(client, keys.delayed)
    pipe = client.pipeline(transaction=False)
    for t, (_, queue, _, _, _, _) in zip(ids, records):
        pipe.zscore(keys.delayed, t)
        pipe.zrank(keys.queue(queue.decode() if queue else ""), t)
        pipe.zscore(keys.gate, t)
    # A queue key of another type refuses ZRANK: the task is in no queue. An outage is
    # no answer about the task: raised.
    rest = []
    for reply in pipe.execute(raise_on_error=False):
        if isinstance(reply, Exception) and is_outage(reply):
            raise reply
        rest.append(None if isinstance(reply, redis.ResponseError) else reply)
    out: dict[str, TaskFacts] = {}
    for i, (t, (state, queue, deps, worker, mapped, tags)) in enumerate(zip(ids, records)):
        if state is None:
            continue
        due, rank, gate = rest[3 * i], rest[3 * i + 1], rest[3 * i + 2]
        d = int(deps or 0)
        out[t] = TaskFacts(visible_state(state.decode(), d), queue.decode() if queue else "", d,
                           worker.decode() if worker else "",
                           (due - now_ms) / 1000 if due is not None else None,
                           int(rank) if rank is not None else None, gate is not None,
                           int(mapped or 0), field_tags(tags))
    return out
