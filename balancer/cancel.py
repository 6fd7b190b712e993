"""Cancel a flow run: what ``run.cancel()``, ``balancer flow cancel ID`` and the dashboard
call (``cancel_flow``).

The change itself is one script (``common/lua/cancel.lua``): every unfinished task of the
flow ends ``cancelled`` and the flow with them, or nothing changes. Leases are its fencing:
a leased task loses its lease, so the worker's late ack or failure of it is refused, as
for any lease taken back. What the script cannot find by itself is which worker holds a
leased task that was not marked running (a lease is only a member of its worker's leases
set), so it is read here first: the workers' leases sets and inboxes, once per cancel.
A task leased between that read and the script is reported back, and we look again.

A run's tasks are those of the flow hash's ``tasks`` blob (a flow submitted whole), those a
@flow function added to its open run (``flow:<id>:tasks``), and the children of every map
that has expanded (``<map id>-<index>``, as many as its ``mapped`` says): read here, and
checked by the script (a map that expands, or a function that adds a task, after our read
makes it write nothing and us look again). A map not expanded yet never will be: the
dispatcher only expands or gathers a map it takes out of the gate, and the cancel takes it
out. A sub-run of a @flow function (a @flow called inside it) is a run of its own, listed
in its parent's ``flow:<id>:tasks``: cancelling the parent cancels it too, and its
sub-runs in turn (its function stops at its next submit, as the parent's does).

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
from balancer.common.codec import CodecError
from balancer.common.keys import Keys
from balancer.common.models import TaskState
from balancer.common.replies import as_bytes_list, as_opt_bytes_list
from balancer.common.retry import is_outage
from balancer.common.scripts import CancelTask, Scripts
from balancer.dynamic import FLOW_KIND, TASK_KIND
from balancer.mapplan import child_ids

log = logging.getLogger("balancer")

# A task leased between our read and the script makes us look again: leases move once per
# task (or when a worker dies), so a few looks suffice; these many mean something is wrong.
ATTEMPTS = 20  # about 4 s of pauses in all
RETRY_PAUSE = 0.02
FIELDS = ["state", "queue", "worker", "lease", "deps", "mapped"]
# No map expands into more children than this (BALANCER_MAX_MAP_CHILDREN may be set up to
# it): a bigger count on a record is not one the dispatcher wrote.
MAX_CHILDREN = 10_000_000


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
    outcome = _cancel_one(client, keys, flow_id, ttl_ms)
    if outcome.state == "cancelled":
        _cancel_sub_runs(client, keys, flow_id, ttl_ms, {flow_id})
    return outcome


def _cancel_one(client: redis.Redis, keys: Keys, flow_id: str, ttl_ms: int) -> Cancelled:
    """Cancel the run ``flow_id`` itself (``cancel_flow``, sub-runs aside)."""
    scripts = Scripts(client, keys)
    state, blob = as_opt_bytes_list(client.hmget(keys.flow(flow_id), ["state", "tasks"]))
    if state is None:
        raise KeyError(f"no flow run {flow_id}")
    if state.decode() != "running":
        return Cancelled(flow_id, state.decode(), 0)
    own = [str(row[0]) for row in codec.unpack(blob or b"\x90")]
    for attempt in range(ATTEMPTS):
        try:
            added, listed = _added(client, keys, flow_id)
            reply = scripts.cancel(flow_id, _look(client, keys, own + added), ttl_ms, listed)
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


def _cancel_sub_runs(client: redis.Redis, keys: Keys, flow_id: str, ttl_ms: int,
                     seen: set[str]) -> None:
    """Cancel the sub-runs listed in ``flow_id``'s run, and theirs, each once (walked with
    a list of its own, so a listing written by hand can make it neither loop nor recurse
    too deep). One that is gone or will not cancel is logged and the others go on: the
    parent is cancelled already."""
    parents = [flow_id]
    while parents:
        parent = parents.pop()
        for sub in _listed(client, keys, parent, FLOW_KIND):
            if sub in seen:
                continue
            seen.add(sub)
            try:
                outcome = _cancel_one(client, keys, sub, ttl_ms)
            except (KeyError, CancelError) as exc:
                log.warning("flow=%s: its sub-run %s was not cancelled: %s", parent, sub,
                            str(exc).strip("'\""))
                continue
            if outcome.cancelled:
                log.info("flow=%s: sub-run %s cancelled with it", parent, sub)
            parents.append(sub)


def _added(client: redis.Redis, keys: Keys, flow_id: str) -> tuple[list[str], int]:
    """The tasks a @flow function added to its run (not its sub-runs), and the length of
    the list they were read from, for the script to check that nothing was added since."""
    entries = as_bytes_list(client.lrange(keys.flow_tasks(flow_id), 0, -1))
    return _of_kind(entries, TASK_KIND), len(entries)


def _listed(client: redis.Redis, keys: Keys, flow_id: str, kind: str) -> list[str]:
    """The ids of ``kind`` (task, flow) listed in ``flow_id``'s run."""
    return _of_kind(as_bytes_list(client.lrange(keys.flow_tasks(flow_id), 0, -1)), kind)


def _of_kind(entries: list[bytes], kind: str) -> list[str]:
    ids = []
    for entry in entries:
        try:
            listed_id, _name, listed_kind = codec.unpack(entry)
        except (CodecError, TypeError, ValueError):
            continue  # not a listing flow_extend.lua wrote
        if listed_kind == kind:
            ids.append(str(listed_id))
    return ids


def _open_tasks(client: redis.Redis, keys: Keys, task_ids: list[str]
                ) -> list[tuple[str, list[bytes | None]]]:
    """The unfinished tasks of ``task_ids``, with their records. A record of another type
    (clobbered by a Redis writer) is passed over: it cannot be cancelled, and must not
    keep the rest of the run from being cancelled."""
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hmget(keys.task(task_id), FIELDS)
    out = []
    for task_id, reply in zip(task_ids, pipe.execute(raise_on_error=False)):
        if isinstance(reply, redis.ResponseError) and not is_outage(reply):
            continue
        if isinstance(reply, Exception):
            raise reply
        row = as_opt_bytes_list(reply)
        if row[0] is not None and row[0].decode() not in TaskState.TERMINAL - {
                TaskState.DEAD}:
            out.append((task_id, row))
    return out


def _look(client: redis.Redis, keys: Keys, task_ids: list[str]) -> list[CancelTask]:
    """The unfinished tasks, the children of the maps among them included, each with the
    lease we see it under (if any) and, for a map, its count of children."""
    open_ = _open_tasks(client, keys, task_ids)
    children = [child for task_id, row in open_ if row[5] is not None
                for child in child_ids(task_id, _count(row[5]))]
    if children:
        open_ += _open_tasks(client, keys, children)
    if not open_:
        return []
    leases = _leases(client, keys, {t for t, _ in open_}) if any(
        row[0] in (b"queued", b"pending") for _, row in open_) else {}
    tasks = []
    for task_id, (state, queue, worker, token, _deps, mapped) in open_:
        q = (queue or b"default").decode()
        seen = leases.get(task_id)
        n = (mapped or b"").decode()
        if seen is not None:
            tasks.append(CancelTask(task_id, q, seen[1], seen[0], seen[2], n))
        elif state == b"running" and worker and token:
            tasks.append(CancelTask(task_id, q, token.decode(), worker.decode(), mapped=n))
        else:
            tasks.append(CancelTask(task_id, q, mapped=n))
    return tasks


def _count(mapped: bytes) -> int:
    """A map's count of children as its record holds it; 0 (none looked for) if it is not
    a count within the limit the dispatcher expands to (a record written by hand)."""
    try:
        n = int(mapped)
    except ValueError:
        return 0
    return n if 0 <= n <= MAX_CHILDREN else 0


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
