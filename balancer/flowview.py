"""One flow run as `balancer flow ID` shows it: every task's state, worker, attempts and
timings, why each waiting one waits, and the error (with its traceback) of each failed one.

Timings come from what the scripts already write, nothing is added to a task's path:
the flow's submit time, each task's ``started`` and ``finished`` (Redis's clock, as the
worker reckons it, at its ack or failure). A task is queued when the flow was submitted
(no upstream) or when its last upstream finished.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from balancer import artifacts, pausing, why
from balancer.artifacts import Artifact
from balancer.common import codec
from balancer.common.codec import CodecError
from balancer.common.keys import Keys
from balancer.common.replies import (
    as_bytes,
    as_bytes_list,
    as_opt_bytes_list,
    field_tags,
    field_utc,
    opt_field_int,
)
from balancer.dynamic import FLOW_KIND

FIELDS = ["state", "deps", "worker", "started", "finished", "failures", "lost", "error",
          "children", "queue", "cached", "tags", "run_name"]


@dataclass
class TaskRow:
    id: str
    name: str
    state: str
    queue: str = ""
    worker: str = ""
    attempts: int = 0
    queued_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    why: str = ""
    error: str = ""
    traceback: str = ""
    cached: bool = False  # completed with a cached result, not run (cache_for)
    tags: list[str] = field(default_factory=list)
    run_name: str = ""  # as its task's task_run_name made it on the worker ("": none)

    @property
    def run_s(self) -> float | None:
        if self.started_ms is None or self.finished_ms is None:
            return None
        return max(0, self.finished_ms - self.started_ms) / 1000

    @property
    def wait_s(self) -> float | None:
        if self.queued_ms is None or self.started_ms is None:
            return None
        return max(0, self.started_ms - self.queued_ms) / 1000


@dataclass
class FlowView:
    id: str
    name: str
    state: str
    created_ms: int | None
    finished_ms: int | None
    counts: dict[str, int]
    tasks: list[TaskRow] = field(default_factory=list)
    parent: str = ""  # a @flow function's sub-run: the run that called it
    error: str = ""  # a @flow function's run: what its function raised
    schedule: str = ""  # a scheduled run: the schedule's id and the due time it fired for
    broken: str = ""  # ended failed: this count of its record was no number (_prelude.lua)
    starts: str = ""  # a run submitted to start later (delay=, eta=): when, in UTC
    run_name: str = ""  # its own name (a @flow's flow_run_name)
    deployment: str = ""  # the deployment it ran for (balancer/serving.py)
    artifacts: list[Artifact] = field(default_factory=list)  # made in it (artifacts.py)
    paused_ms: int | None = None  # paused (pausing.py) since then, waiting for a resume

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for extra in ("parent", "error", "schedule", "broken", "starts", "run_name",
                      "deployment"):
            if not out[extra]:
                del out[extra]
        for row, task in zip(out["tasks"], self.tasks):
            row["run_s"], row["wait_s"] = task.run_s, task.wait_s
        return out


def added_to(client: redis.Redis, keys: Keys, flow_id: str
             ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """What a @flow function added to its run (balancer/dynamic.py), (id, name) each, in
    the order added: its tasks, and its sub-runs; nothing for a flow submitted whole."""
    tasks: list[tuple[str, str]] = []
    sub_runs: list[tuple[str, str]] = []
    for entry in as_bytes_list(client.lrange(keys.flow_tasks(flow_id), 0, -1)):
        try:
            task_id, name, kind = codec.unpack(entry)
        except (CodecError, ValueError, TypeError):
            continue  # not ours to show
        (sub_runs if kind == FLOW_KIND else tasks).append((str(task_id), str(name)))
    return tasks, sub_runs


def gather(client: redis.Redis, keys: Keys, flow_id: str) -> FlowView | None:
    """The run as recorded; None when there is no such run (or it expired)."""
    (name, flow_state, blob, created, finished, total, failed, cancelled, raised,
     parent, schedule, scheduled, broken, run_name, deployment, paused) = as_opt_bytes_list(
        client.hmget(keys.flow(flow_id), [
            "name", "state", "tasks", "created", "finished", "total", "failed", "cancelled",
            "error", "parent", "schedule", "scheduled", "broken", "run_name", "deployment",
            "paused"]))
    if name is None:
        return None
    listed = [(str(t), str(n)) for t, n in codec.unpack(as_bytes(blob or b"\x90"))]
    added, sub_runs = added_to(client, keys, flow_id)  # a @flow function's run
    listed += added
    pipe = client.pipeline(transaction=False)
    for task_id, _ in listed:
        pipe.hmget(keys.task(task_id), FIELDS)
    records = [dict(zip(FIELDS, as_opt_bytes_list(r))) for r in pipe.execute()]
    facts = why.task_facts(client, keys, [t for t, _ in listed])
    held = why.ClusterFacts.gather(client, keys)
    upstream_done: dict[str, list[int | None]] = {}  # child -> its upstreams' finish times
    for rec in records:
        try:
            children = codec.unpack(rec["children"]) if rec["children"] else []
        except CodecError:
            children = []
        done = opt_field_int(rec["finished"]) if rec["state"] == b"completed" else None
        for child in children:
            upstream_done.setdefault(str(child[0]), []).append(done)
    created_ms = opt_field_int(created)
    rows = []
    for (task_id, task_name), rec in zip(listed, records):
        f = facts.get(task_id)
        state = f.state if f else "expired"
        err = codec.unpack_error(rec["error"]) if state != "completed" else None
        ups = upstream_done.get(task_id)
        queued = created_ms if ups is None else (
            max(u for u in ups if u is not None) if ups and None not in ups else None)
        failures, lost = opt_field_int(rec["failures"]) or 0, opt_field_int(rec["lost"]) or 0
        ran = 1 if state in ("completed", "running") else 0
        rows.append(TaskRow(
            task_id, task_name, state, (rec["queue"] or b"").decode(),
            (rec["worker"] or b"").decode(), failures + lost + ran, queued,
            opt_field_int(rec["started"]), opt_field_int(rec["finished"]),
            why.reason(f, held) if f else "", str(err) if err else "",
            err.traceback if err else "", rec["cached"] == b"1",
            list(field_tags(rec["tags"])), (rec["run_name"] or b"").decode(errors="replace")))
    for run_id, sub_name in sub_runs:
        sub = as_opt_bytes_list(client.hmget(keys.flow(run_id), ["state"]))[0]
        rows.append(TaskRow(run_id, sub_name, "sub-run " + (sub.decode() if sub else "expired")))
    done = sum(r.state == "completed" for r in rows)
    counts = {"total": opt_field_int(total) or len(rows), "completed": done,
              "failed": opt_field_int(failed) or 0, "cancelled": opt_field_int(cancelled) or 0,
              "cached": sum(r.cached for r in rows)}
    return FlowView(flow_id, name.decode(), (flow_state or b"").decode(), created_ms,
                    opt_field_int(finished), counts, rows, (parent or b"").decode(),
                    str(codec.unpack_error(raised)) if raised else "",
                    _scheduled(schedule, scheduled),
                    (broken or b"").decode(errors="replace"),
                    _utc(scheduled) if schedule is None else "",
                    (run_name or b"").decode(errors="replace"),
                    (deployment or b"").decode(errors="replace"),
                    artifacts.of_run(client, keys, flow_id),
                    pausing.paused_since(paused))


def _scheduled(schedule: bytes | None, scheduled: bytes | None) -> str:
    """"<schedule id>, due <UTC time>" for a run a schedule fired, else ""."""
    if schedule is None or opt_field_int(scheduled) is None:
        return ""
    return f"{schedule.decode(errors='replace')}, due {_utc(scheduled)}"


def _utc(ms: bytes | None) -> str:
    """A record's ms as UTC time, "" if none (or past what a clock can show)."""
    at = field_utc(ms)
    return "" if at is None else at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _clock(ms: int | None) -> str:
    if ms is None:
        return "-"
    try:
        return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"
    except (OverflowError, OSError, ValueError):  # a time written by hand, past any clock
        return "?"


def _secs(s: float | None) -> str:
    return "-" if s is None else f"{s:.3f}s"


def render(view: FlowView, verbose: bool = False) -> list[str]:
    c = view.counts
    cached = f" ({c['cached']} from cache)" if c.get("cached") else ""
    took = (f", took {(view.finished_ms - view.created_ms) / 1000:.3f}s"
            if view.finished_ms and view.created_ms else "")
    named = f" ({view.run_name})" if view.run_name else ""
    lines = [f"flow {view.id}  {view.name}{named}  {view.state}: {c['completed']}/{c['total']}"
             f" completed{cached},"
             f" {c['failed']} failed, {c['cancelled']} cancelled; submitted"
             f" {_clock(view.created_ms)}{took}"
             + (f"  (sub-run of {view.parent})" if view.parent else "")
             + (f"  (schedule {view.schedule})" if view.schedule else "")
             + (f"  (deployment {view.deployment})" if view.deployment else "")
             + (f"  (starts {view.starts})" if view.starts else "")]
    if view.paused_ms is not None and view.state == "running":
        lines.append(f"  paused since {_clock(view.paused_ms)}: its function waits for"
                     f" `balancer flow resume {view.id}`")
    if view.error:
        lines.append(f"  its function raised {view.error}")
    if view.broken:
        lines.append(f"  ended as failed: its record's {view.broken!r} count was no number"
                     " (written by something other than the cluster)")
    lines.append(f"  {'task':<24} {'name':<20} {'state':<15} {'worker':<20} {'tries':>5}"
                 f" {'queued':>12} {'started':>12} {'finished':>12} {'waited':>9}"
                 f" {'ran':>9}")
    for r in view.tasks:
        lines.append(
            f"  {r.id:<24} {r.name[:20]:<20} {r.state:<15} {r.worker[:20] or '-':<20}"
            f" {r.attempts:>5} {_clock(r.queued_ms):>12} {_clock(r.started_ms):>12}"
            f" {_clock(r.finished_ms):>12} {_secs(r.wait_s):>9} {_secs(r.run_s):>9}")
        if r.run_name:
            lines.append(f"      run name: {r.run_name}")
        if r.cached:
            lines.append("      cached: completed with a cached result, not run")
        if r.tags:
            lines.append(f"      tags: {', '.join(r.tags)}")
        if r.why:
            lines.append(f"      why: {r.why}")
        if r.error:
            lines.append(f"      error: {r.error}")
            if verbose and r.traceback:
                lines += ["      " + line for line in r.traceback.rstrip().splitlines()]
    if not verbose and any(r.traceback for r in view.tasks):
        lines.append("  (--verbose shows the tracebacks)")
    if view.artifacts:
        lines.append(f"  artifacts ({len(view.artifacts)}; balancer artifact inspect ID):")
        for a in view.artifacts:
            made = f"task {a.task_run_id}" if a.task_run_id else "the flow"
            lines.append(f"    {a.id}  {artifacts.summary(a)}  (by {made})")
    return lines
