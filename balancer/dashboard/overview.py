"""What the dashboard's main page shows, as one JSON-ready dict: `balancer status` (workers
with their load and its parts, queues with what holds them and their offers, recent
flows, set-aside entries), plus each worker's state and the tasks it runs now, each
queue's head age, the dispatchers (leader and standbys) and the quarantined tasks."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import redis

from balancer import admin, deployments
from balancer import status as status_view
from balancer.common import partitions
from balancer.common.connection import server_time_ms
from balancer.common.keys import Keys
from balancer.common.settings import Settings
from balancer.dashboard.metrics import head_ages_all
from balancer.scheduling import CPU_WEIGHT, MEMORY_SAFE, MEMORY_WEIGHT
from balancer.view import allowed_silence

SHOWN_PER_WORKER = 20  # tasks listed under a worker


def _worker_state(row: status_view.WorkerRow, settings: Settings) -> str:
    if not row.alive or row.last_seen_s > allowed_silence(
            row.beat_s, settings.worker_timeout, settings.heartbeat_interval):
        return "dead"
    if row.capacity == 0:
        return "draining"
    if row.foreign:  # another release: this release's dispatcher leases it nothing
        return "other release"
    return "alive"


def _held(client: redis.Redis, keys: Keys, worker_ids: list[str]
          ) -> dict[str, list[dict[str, str]]]:
    """The tasks leased to each worker, with their name and state (running, or queued:
    in its inbox), running ones first."""
    pipe = client.pipeline(transaction=False)
    for wid in worker_ids:
        pipe.srandmember(keys.leases(wid), SHOWN_PER_WORKER)
    members = pipe.execute(raise_on_error=False)
    ids: dict[str, list[str]] = {}
    for wid, raw in zip(worker_ids, members):
        ids[wid] = sorted({m.split(b"|", 1)[0].decode("utf-8", "replace")
                           for m in raw} if isinstance(raw, list) else set())
    pipe = client.pipeline(transaction=False)
    for wid in worker_ids:
        for task_id in ids[wid]:
            pipe.hmget(keys.task(task_id), ["name", "state", "flow"])
    replies = iter(pipe.execute(raise_on_error=False))
    out: dict[str, list[dict[str, str]]] = {}
    for wid in worker_ids:
        rows = []
        for task_id in ids[wid]:
            reply = next(replies)
            name, state, flow = reply if isinstance(reply, list) else (None, None, None)
            rows.append({"id": task_id, "name": (name or b"").decode("utf-8", "replace"),
                         "state": "running" if state == b"running" else "leased",
                         "flow": (flow or b"").decode("utf-8", "replace")})
        rows.sort(key=lambda r: r["state"] != "running")
        out[wid] = rows
    return out


def _held_all(client: redis.Redis, every: list[Keys], worker_ids: list[str]
              ) -> dict[str, list[dict[str, str]]]:
    """``_held`` over every partition: a worker holds leases in each."""
    out: dict[str, list[dict[str, str]]] = {}
    for keys in every:
        for wid, rows in _held(client, keys, worker_ids).items():
            out.setdefault(wid, []).extend(rows)
    for rows in out.values():
        rows.sort(key=lambda r: r["state"] != "running")
        del rows[SHOWN_PER_WORKER:]
    return out


def gather(client: redis.Redis, keys: Keys, settings: Settings, flows: int = 20,
           only: status_view.FlowFilter | None = None) -> dict[str, Any]:
    """The page's data; with several partitions, of them all (``status.gather_all``).
    ``only``: the recent flows listed are those it keeps (``balancer flows --state``)."""
    every = partitions.every(client, keys)
    snap = status_view.gather_all(client, every, recent=flows,
                                  leader_ttl=settings.leader_ttl)
    data = snap.to_dict()
    held = _held_all(client, every, [w.id for w in snap.workers])
    for row, shown in zip(snap.workers, data["workers"]):
        shown["state"] = _worker_state(row, settings)
        shown["tasks"] = held.get(row.id, [])
        shown["load_parts"] = {
            "leases": round(row.leased / row.capacity, 3) if row.capacity else None,
            "cpu_pressure": round(CPU_WEIGHT * row.pressure, 3),
            "memory": round(MEMORY_WEIGHT * max(0.0, row.memory - MEMORY_SAFE), 3),
        }
        if shown["load"] == float("inf"):
            shown["load"] = None
    ages = head_ages_all(client, every, [q.name for q in snap.queues if q.ready])
    for q in data["queues"]:
        q["head_age_s"] = round(ages.get(q["name"], 0.0), 1)
    leads: dict[str, list[int]] = {}  # dispatcher id -> the partitions it leads
    for p, leader in enumerate(snap.leaders or [snap.leader]):
        if leader:
            leads.setdefault(leader.split("|", 1)[-1], []).append(p)
    data["dispatchers"] = [
        {"id": d.id, "seen_s": d.seen_s, "role": "leader" if d.id in leads else "standby",
         "partitions": leads.get(d.id, [])}
        for d in snap.dispatchers]
    for leader_id, led in leads.items():
        if leader_id not in {d["id"] for d in data["dispatchers"]}:
            data["dispatchers"].insert(0, {"id": leader_id, "seen_s": None, "role": "leader",
                                           "partitions": led})
    data["quarantined"] = [row for part in every
                           for row in admin.quarantined(client, part, limit=200)][:200]
    shown_flows = (status_view.recent_flows_all(client, every, flows, only) if only
                   else snap.flows)
    data["flows"] = [asdict(f) for f in shown_flows]
    data["flow_filter"] = only.state if only else None
    now_ms = int(server_time_ms(client, keys.deployments))
    data["deployments"] = [  # what serve processes serve (balancer/serving.py)
        {**asdict(d), "alive": now_ms - d.seen_ms < deployments.GONE_AFTER_MS}
        for d in deployments.served(client, keys)]
    return data
