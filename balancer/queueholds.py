"""What holds a queue, so that `balancer queue rm` removes only a queue with nothing in it:
ready, leased, retrying, pending or quarantined tasks of it, and workers serving it.

Read once, for an operator's command: every worker's leases and every running flow's
tasks are looked at. The removal itself (``queue_rm.lua``) checks the ready tasks again,
atomically, since a submit may come in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from balancer import flowview, why
from balancer.common import codec, signals
from balancer.common.keys import Keys
from balancer.common.models import TaskState
from balancer.common.replies import as_bytes_list, as_opt_bytes_list


@dataclass
class Holds:
    queued: int = 0
    leased: int = 0
    retrying: int = 0
    pending: int = 0
    quarantined: int = 0
    workers: list[str] = field(default_factory=list)

    def reasons(self) -> list[str]:
        counts = [(self.queued, "queued"), (self.leased, "leased or running"),
                  (self.retrying, "waiting to retry or to start later"),
                  (self.pending, "pending (upstream not done)"),
                  (self.quarantined, "quarantined (balancer dlq ls)")]
        out = [f"{n} task{'s' if n != 1 else ''} {what}" for n, what in counts if n]
        if self.workers:
            out.append(f"served by worker{'s' if len(self.workers) != 1 else ''} "
                       + ", ".join(self.workers[:5]) + (" ..." if len(self.workers) > 5 else ""))
        return out


def _queues_of(client: redis.Redis, keys: Keys, ids: list[str]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hget(keys.task(task_id), "queue")
    return [(q or b"").decode() for q in pipe.execute()]


def holds(client: redis.Redis, keys: Keys, queue: str) -> Holds:
    found = Holds(queued=int(client.zcard(keys.queue(queue))))
    cluster = why.ClusterFacts.gather(client, keys)
    found.workers = [w.id for w in cluster.workers if queue in w.queues]
    workers = [w.decode() for w in as_bytes_list(client.zrange(keys.workers, 0, -1))]
    pipe = client.pipeline(transaction=False)
    for w in workers:
        pipe.smembers(keys.leases(w))
    leased = [pair[0] for members in pipe.execute() for m in members
              if (pair := signals.parse_lease_member(m)) is not None]
    found.leased = sum(q == queue for q in _queues_of(client, keys, leased))
    delayed = [t.decode() for t in as_bytes_list(client.zrange(keys.delayed, 0, -1))]
    found.retrying = sum(q == queue for q in _queues_of(client, keys, delayed))
    dead = [t.decode() for t in as_bytes_list(client.zrange(keys.dlq, 0, -1))]
    found.quarantined = sum(q == queue for q in _queues_of(client, keys, dead))
    flows = [f.decode() for f in as_bytes_list(client.zrange(keys.flows, 0, -1))]
    pipe = client.pipeline(transaction=False)
    for flow_id in flows:
        pipe.hmget(keys.flow(flow_id), ["state", "tasks"])
    pending: list[str] = []
    for flow_id, (state, blob) in zip(flows, (as_opt_bytes_list(r) for r in pipe.execute())):
        if state == b"running":  # its record's tasks, and those a @flow function added
            pending += [str(row[0]) for row in codec.unpack(blob or b"\x90")]
            pending += [t for t, _ in flowview.added_to(client, keys, flow_id)[0]]
    pipe = client.pipeline(transaction=False)
    for task_id in pending:
        pipe.hmget(keys.task(task_id), ["state", "queue", "deps"])
    for state, q, deps in (as_opt_bytes_list(r) for r in pipe.execute()):
        if (state == TaskState.PENDING.encode() and int(deps or 0) > 0
                and (q or b"").decode() == queue):
            found.pending += 1
    return found
