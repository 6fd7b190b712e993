"""The facts of a task run that ``balancer.context`` offers and only the records hold,
read in one round trip when the task first asks for one (balancer/runcontext.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import redis
from balancer.common import codec
from balancer.common.codec import CodecError
from balancer.common.keys import Keys
from balancer.common.replies import as_opt_bytes, field_int, field_tags, field_utc
from balancer.common.signals import Lease
from balancer.worker.looping import LoopStore

from balancer.runcontext import RunFacts, dated


def facts(lease: Lease, worker_id: str, client: redis.Redis, keys: Keys,
          record_name: Callable[[str], None] | None = None,
          loop_store: LoopStore | None = None) -> RunFacts:
    """The run's facts: the lease's at once, the records' on demand (``keys``: those of
    the lease's partition); ``record_name`` writes the run's name once it is made;
    ``loop_store`` keeps a looping run's progress (worker/looping.py)."""
    return RunFacts(lease.task_id, lease.name, lease.flow, lease.queue, worker_id,
                    lambda: read(client, keys, lease.task_id, lease.flow),
                    record_name=record_name, client=client, namespace=keys.namespace,
                    read_parameters=lambda: parameters(client, keys, lease.flow),
                    loop_store=loop_store)


def read(client: redis.Redis, keys: Keys, task_id: str, flow_id: str) -> dict[str, Any]:
    """The task's runs so far (this one included) and tags, its flow's name, and the
    date the run stands for: a scheduled run's due time, else when it was submitted. Also,
    for the worker's state handlers (worker/statehooks.py) and not offered to tasks, its
    failures so far and its retries (``failures`` and ``retries``), and a looping run's
    recorded progress (``loop``: worker/looping.py reads it)."""
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.task(task_id), ["failures", "lost", "tags", "retries", "loop"])
    pipe.hmget(keys.flow(flow_id), ["name", "scheduled", "created", "run_name", "deployment"])
    ((failures, lost, tags, retries, loop),
     (name, scheduled, created, run_name, deployment)) = pipe.execute()
    flow_name = name.decode(errors="replace") if name is not None else None
    out: dict[str, Any] = {
        "failures": max(0, field_int(failures)), "retries": max(0, field_int(retries)),
        "task_run_count": max(0, field_int(failures)) + max(0, field_int(lost)) + 1,
        "task_tags": sorted(field_tags(tags)),
        "flow_name": flow_name,
        "flow_run_name": run_name.decode(errors="replace") if run_name is not None else flow_name,
        "deployment": deployment.decode(errors="replace") if deployment is not None else None,
        "loop": loop}
    return {**out, **dated(field_utc(scheduled) or field_utc(created)
                           or datetime.now(timezone.utc))}


def parameters(client: redis.Redis, keys: Keys, flow_id: str) -> tuple[dict[str, Any], bool]:
    """The flow run's parameters from its record, read apart from the other facts (up to
    64 KiB, which a state handler's read of the run's failures would carry each run for
    nothing), and whether the record keeps them all (balancer/parameter.py); {} when it
    has none, or holds something that is not a map of them (written by someone else:
    then not all of them either)."""
    blob, cut = client.hmget(keys.flow(flow_id), ["params", "params_cut"])
    blob = as_opt_bytes(blob)
    if not blob:
        return {}, cut is None
    try:
        values = codec.unpack(blob)
    except CodecError:
        return {}, False
    return (values, cut is None) if isinstance(values, dict) else ({}, False)
