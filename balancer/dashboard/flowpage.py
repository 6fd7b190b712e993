"""What the dashboard's flow page shows: every task of one run with its state, worker,
attempts, timings, result size, error (with traceback) and why it waits, and the edges
of its DAG; for a @flow function's run, the tasks and sub-runs it added, in the order
added (balancer/flowview.py: added_to). Read in a few pipelined round trips."""

from __future__ import annotations

from typing import Any

import redis

from balancer import artifacts, flowview, pausing, why
from balancer.common import codec
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes, as_opt_bytes_list, opt_field_int

FIELDS = ["worker", "started", "finished", "ready", "failures", "lost", "error", "children",
          "fn", "run_name"]
MAX_TASKS = 2000  # a page draws at most this many; the rest are counted


class NoSuchFlow(LookupError):
    pass


def gather(client: redis.Redis, keys: Keys, flow_id: str) -> dict[str, Any]:
    (name, state, blob, total, remaining, failed, created, finished,
     run_name, paused) = as_opt_bytes_list(client.hmget(keys.flow(flow_id), [
         "name", "state", "tasks", "total", "remaining", "failed", "created", "finished",
         "run_name", "paused"]))
    if name is None:
        raise NoSuchFlow(flow_id)
    try:
        listed = [(str(t), str(n)) for t, n in codec.unpack(as_bytes(blob))]
    except (codec.CodecError, TypeError, ValueError):
        listed = []
    added, sub_runs = flowview.added_to(client, keys, flow_id)  # a @flow function's run
    listed += added
    shown = listed[:MAX_TASKS]
    ids = [t for t, _ in shown]
    facts = why.task_facts(client, keys, ids)
    cluster = why.ClusterFacts.gather(client, keys)
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(keys.task(task_id), FIELDS)
        pipe.hstrlen(keys.task(task_id), "result")
    replies = pipe.execute(raise_on_error=False)
    tasks, edges = [], []
    for i, (task_id, task_name) in enumerate(shown):
        record, size = replies[2 * i], replies[2 * i + 1]
        if isinstance(record, Exception):
            record = [None] * len(FIELDS)
        (worker, started, done_at, ready, failures, lost, error, children, fn,
         task_run_name) = record
        f = facts.get(task_id)
        err = codec.unpack_error(error)
        task_state = f.state if f else "expired"
        tried = (opt_field_int(failures) or 0) + (opt_field_int(lost) or 0)
        tasks.append({
            "id": task_id, "name": task_name, "state": task_state,
            "run_name": task_run_name.decode("utf-8", "replace") if task_run_name else "",
            "fn": fn.decode("utf-8", "replace") if fn else "",
            "queue": f.queue if f else "",
            "worker": worker.decode("utf-8", "replace") if worker else "",
            # Runs so far: those that failed or died, and the one running or completed.
            "attempts": tried + (task_state in ("running", "completed")),
            "ready_ms": opt_field_int(ready), "started_ms": opt_field_int(started),
            "finished_ms": opt_field_int(done_at),
            "result_bytes": size if isinstance(size, int) and task_state == "completed"
            else None,
            "error": {"type": err.type, "message": err.message, "traceback": err.traceback}
            if err and task_state != "completed" else None,
            "why": why.reason(f, cluster) if f else "",
        })
        try:
            for child in codec.unpack(children) if children else ():
                edges.append([task_id, str(child[0])])
        except (codec.CodecError, TypeError, ValueError, IndexError):
            pass
    subs = _states(client, keys, [t for t, _ in sub_runs])
    for (sub_id, sub_name), sub_state in zip(sub_runs, subs):
        tasks.append({"id": sub_id, "name": sub_name, "state": sub_state, "sub_run": True})
    return {
        "id": flow_id, "name": name.decode("utf-8", "replace"),
        "run_name": run_name.decode("utf-8", "replace") if run_name else "",
        "state": (state or b"").decode("utf-8", "replace"),
        "total": opt_field_int(total) or 0, "remaining": opt_field_int(remaining) or 0,
        "failed": opt_field_int(failed) or 0, "created_ms": opt_field_int(created),
        "finished_ms": opt_field_int(finished), "tasks": tasks, "edges": edges,
        "not_shown": max(0, len(listed) - len(shown)),
        "artifacts": [a.to_dict() for a in artifacts.of_run(client, keys, flow_id)],
        # Its function waits in pause_flow_run since then (balancer/pausing.py).
        "paused_ms": pausing.paused_since(paused),
    }


def _states(client: redis.Redis, keys: Keys, flow_ids: list[str]) -> list[str]:
    """Each run's state ("expired" once its record is gone), in one round trip."""
    if not flow_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for f in flow_ids:
        pipe.hget(keys.flow(f), "state")
    return [r.decode("utf-8", "replace") if isinstance(r, bytes) else "expired"
            for r in pipe.execute(raise_on_error=False)]
