"""What operators change on a running cluster, shared by the `balancer` CLI and the
dashboard: queue settings (priority, concurrency limit, pause), tag limits, quarantined
tasks (listed, retried, purged). Each function checks its input and raises ``AdminError`` with
a message naming what was wrong."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from balancer.common import codec, partitions, signals
from balancer.common.keys import Keys
from balancer.common.replies import as_opt_bytes, as_opt_bytes_list, as_scored
from balancer.common.scripts import Scripts
from balancer.options import COUNT_LIMIT, PRIORITY_LIMIT
from balancer.queue import check_queue_name
from balancer.taglimits import TagLimit, check_tag_name, limit_rows, merge_rows


class AdminError(ValueError):
    """An operator's request that cannot be applied, and why."""


def configure_queue(client: redis.Redis, keys: Keys, name: str,
                    fields: dict[str, Any]) -> None:
    """Set (or, for "", clear) queue settings and tell the dispatcher, in one transaction.
    ``fields``: priority, concurrency_limit (int, or "" to remove it), paused ("1"/"0")."""
    try:
        check_queue_name(name)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    for field_name, value in fields.items():
        if field_name not in ("priority", "concurrency_limit", "paused"):
            raise AdminError(f"unknown queue setting {field_name!r}")
        if field_name == "priority" and value is not None:
            _bounded("priority", value, -PRIORITY_LIMIT, PRIORITY_LIMIT)
        if field_name == "concurrency_limit" and value not in (None, ""):
            _bounded("concurrency limit", value, 1, COUNT_LIMIT)
        if field_name == "paused" and value not in ("0", "1"):
            raise AdminError("paused must be 0 or 1")
    pipe = client.pipeline(transaction=True)
    set_fields: dict[FieldT, EncodableT] = {k: v for k, v in fields.items()
                                            if v is not None and v != ""}
    if set_fields:
        pipe.hset(keys.queue_conf(name), mapping=set_fields)
    cleared = [k for k, v in fields.items() if v == ""]
    if cleared:
        pipe.hdel(keys.queue_conf(name), *cleared)
    pipe.sadd(keys.queues, name)
    signals.push(pipe, keys.wake, signals.QUEUES)
    pipe.execute()


def configure_tag(client: redis.Redis, keys: Keys, tag: str, limit: int | None) -> None:
    """Set (or, with None, remove) a tag's concurrency limit and tell the dispatcher, in
    one transaction. The leases counted for the tag stay counted: they give their places
    back as they end."""
    try:
        check_tag_name(tag)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    if limit is not None:
        _bounded("tag limit", limit, 1, COUNT_LIMIT)
    pipe = client.pipeline(transaction=True)
    if limit is None:
        pipe.hdel(keys.tag_limits, tag)
    else:
        pipe.hset(keys.tag_limits, tag, int(limit))
    pipe.rpush(keys.wake, signals.QUEUES)
    pipe.execute()


def tag_rows(client: redis.Redis, keys: Keys) -> list[TagLimit]:
    """Every tag with a limit or leases counted, by name (``balancer tag ls``), over every
    partition: each holds the limit (written to all) and counts its own leases, summed
    here."""
    every = partitions.every(client, keys)
    pipe = client.pipeline(transaction=False)
    for part in every:
        pipe.hgetall(part.tag_limits)
        pipe.hgetall(part.tag_inflight)
    replies = pipe.execute()
    return merge_rows([limit_rows(limits, leased)
                       for limits, leased in zip(replies[::2], replies[1::2])])


def _bounded(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AdminError(f"{what} must be an integer from {low} to {high}, got {value!r}")


def quarantined(client: redis.Redis, keys: Keys, limit: int = 0) -> list[dict[str, Any]]:
    """The quarantined tasks, oldest first, with why (``balancer dlq ls``); the first
    ``limit`` only, when given."""
    entries = as_scored(client.zrange(keys.dlq, 0, limit - 1, withscores=True))
    pipe = client.pipeline(transaction=False)
    for member, _ in entries:
        pipe.hmget(keys.task(member.decode()), ["name", "fn", "queue", "flow", "lost", "error"])
    rows = []
    replies = [as_opt_bytes_list(row) for row in pipe.execute()]
    for (member, score), (name, fn, queue, flow, lost, error) in zip(entries, replies):
        err = codec.unpack_error(error)
        rows.append({"id": member.decode(), "name": (name or b"").decode(),
                     "fn": (fn or b"").decode(), "queue": (queue or b"").decode(),
                     "flow": (flow or b"").decode(), "lost": int(lost or 0),
                     "since": score / 1000, "reason": str(err) if err else ""})
    return rows


def dlq_holders(client: redis.Redis, every: Sequence[Keys],
                task_ids: Sequence[str] | None = None) -> dict[str, Keys]:
    """The partition whose dlq holds each quarantined task (``every``: the keys of each
    partition): every one when ``task_ids`` is None, else those named that a dlq holds."""
    pipe = client.pipeline(transaction=False)
    if task_ids is None:
        for keys in every:
            pipe.zrange(keys.dlq, 0, -1)
        return {m.decode(): keys for keys, members in zip(every, pipe.execute())
                for m in members}
    for keys in every:
        for task_id in task_ids:
            pipe.zscore(keys.dlq, task_id)
    scores = iter(pipe.execute())
    held: dict[str, Keys] = {}
    for keys in every:
        for task_id in task_ids:
            if next(scores) is not None:
                held.setdefault(task_id, keys)
    return held


def retry_quarantined(client: redis.Redis, keys: Keys, scripts: Scripts, task_id: str) -> str:
    """Put a quarantined task back into its queue; returns the queue."""
    queue = as_opt_bytes(client.hget(keys.task(task_id), "queue"))
    if queue is None or not scripts.dlq_retry(task_id, queue.decode()):
        raise AdminError(f"task {task_id} is not quarantined")
    return queue.decode()


def purge_quarantined(client: redis.Redis, keys: Keys, scripts: Scripts, task_id: str,
                      ttl_ms: int) -> None:
    """Fail a quarantined task for good (its dependents too)."""
    flow = as_opt_bytes(client.hget(keys.task(task_id), "flow"))
    if flow is None or not scripts.dlq_purge(task_id, flow.decode(), ttl_ms):
        raise AdminError(f"task {task_id} is not quarantined")
