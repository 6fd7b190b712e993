"""Cancel a flow run: what ``run.cancel()``, ``balancer flow cancel ID`` and the dashboard
call (``cancel_flow``).

The change itself is one script (``common/lua/cancel.lua``): every unfinished task of the
flow ends ``cancelled`` and the flow with them, or nothing changes. Leases are its fencing:
a leased task loses its lease, so the worker's late ack or failure of it is refused, as
for any lease taken back. What the script cannot find by itself is which worker holds a
leased task that was not marked running (a lease is only a member of its worker's leases
set), so it is read here first: the workers' leases sets and inboxes, once per cancel.
A task leased between that read and the script is reported back, and we look again.

A worker learns that a task it took was cancelled from its ``cancels:<worker>`` list,
which it reads with a blocking pop of its own (``worker/cancels.py``): nothing is added
to any task's path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

from balancer.common import codec, signals
from balancer.common.keys import Keys
from balancer.common.models import TaskState
from balancer.common.replies import as_bytes_list, as_opt_bytes_list
from balancer.common.scripts import CancelTask, Scripts

log = logging.getLogger("balancer")

# A task leased between our read and the script makes us look again: leases move once per
# task (or when a worker dies), so a few looks suffice; these many mean something is wrong.
ATTEMPTS = 20  # about 4 s of pauses in all
RETRY_PAUSE = 0.02


class CancelError(Exception):
    """The run could not be cancelled: the message says why, in one line."""


@dataclass(frozen=True)
class Cancelled:
    """The outcome of ``cancel_flow``: the flow's state after it, how many tasks this call
    cancelled (0: it was already finished or cancelled, nothing changed), and the workers
    whose leases it took back (told to stop what they run)."""

    flow_id: str
    state: str
    cancelled: int
    workers: tuple[str, ...] = ()


def cancel_flow(client: redis.Redis, keys: Keys, flow_id: str, ttl_ms: int) -> Cancelled:
    """Cancel the flow run ``flow_id``: its queued tasks never start, its running ones
    are stopped (the process-pool child killed and replaced, the thread-pool task
    abandoned), and the flow and its unfinished tasks end ``cancelled``; nothing of another
    flow is touched. Idempotent: a flow already finished (completed, failed, cancelled) is
    left as it is, and ``cancelled`` is 0. ``ttl_ms``: how long the records are kept
    (``Settings.result_ttl`` in ms).

    Raises KeyError for an unknown flow id, CancelError when Redis refuses it (an ACL user
    without the rights) or the tasks keep moving."""
    scripts = Scripts(client, keys)
    state, blob = as_opt_bytes_list(client.hmget(keys.flow(flow_id), ["state", "tasks"]))
    if state is None:
        raise KeyError(f"no flow run {flow_id}")
    if state.decode() != "running":
        return Cancelled(flow_id, state.decode(), 0)
    task_ids = [str(row[0]) for row in codec.unpack(blob or b"\x90")]
    for attempt in range(ATTEMPTS):
        try:
            reply = scripts.cancel(flow_id, _look(client, keys, task_ids), ttl_ms)
        except redis.exceptions.NoPermissionError as exc:
            raise CancelError(f"cancelling flow {flow_id} needs the operators' Redis user"
                              f" (balancer-dispatcher in `balancer acl`): {exc}") from None
        if reply.state == "missing":
            raise KeyError(f"no flow run {flow_id}")
        if not reply.retry:
            if reply.cancelled:
                log.info("flow=%s cancelled: %d tasks; workers told: %s", flow_id,
                         reply.cancelled, ",".join(reply.workers) or "none")
            return Cancelled(flow_id, reply.state, reply.cancelled, reply.workers)
        time.sleep(RETRY_PAUSE * (attempt + 1))
    raise CancelError(f"flow {flow_id}: tasks {', '.join(reply.retry[:5])} kept moving between"
                      " workers; nothing was cancelled, try again")


def _look(client: redis.Redis, keys: Keys, task_ids: list[str]) -> list[CancelTask]:
    """The unfinished tasks, each with the lease we see it under (if any)."""
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hmget(keys.task(task_id), ["state", "queue", "worker", "lease", "deps"])
    rows = [as_opt_bytes_list(r) for r in pipe.execute()]
    open_ = [(t, row) for t, row in zip(task_ids, rows)
             if row[0] is not None and row[0].decode() not in TaskState.TERMINAL - {
                 TaskState.DEAD}]
    if not open_:
        return []
    leases = _leases(client, keys, {t for t, _ in open_}) if any(
        row[0] in (b"queued", b"pending") for _, row in open_) else {}
    tasks = []
    for task_id, (state, queue, worker, token, _deps) in open_:
        q = (queue or b"default").decode()
        seen = leases.get(task_id)
        if seen is not None:
            tasks.append(CancelTask(task_id, q, seen[1], seen[0], seen[2]))
        elif state == b"running" and worker and token:
            tasks.append(CancelTask(task_id, q, token.decode(), worker.decode()))
        else:
            tasks.append(CancelTask(task_id, q))
    return tasks


def _leases(client: redis.Redis, keys: Keys,
            wanted: set[str]) -> dict[str, tuple[str, str, bytes]]:
    """Task id -> (worker, token, inbox entry or b"") of every lease of ``wanted`` held by a
    registered worker."""
    workers = [w.decode() for w in as_bytes_list(client.zrange(keys.workers, 0, -1))]
    if not workers:
        return {}
    pipe = client.pipeline(transaction=False)
    for w in workers:
        pipe.smembers(keys.leases(w))
        pipe.lrange(keys.inbox(w), 0, -1)
    replies = pipe.execute()
    found: dict[str, tuple[str, str, bytes]] = {}
    for i, w in enumerate(workers):
        members, entries = replies[2 * i], replies[2 * i + 1]
        inbox: dict[tuple[str, str], bytes] = {}
        for raw in entries:
            lease = signals.parse_lease(raw)
            if lease is not None and lease.task_id in wanted:
                inbox[(lease.task_id, lease.token)] = raw
        for member in members:
            pair = signals.parse_lease_member(member)
            if pair is not None and pair[0] in wanted:
                found[pair[0]] = (w, pair[1], inbox.get(pair, b""))
    return found
