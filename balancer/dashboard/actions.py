"""The dashboard's actions, in one table: what each takes and what it does. The server
runs one only for a POST carrying the right token (see server.py); each checks its input
and raises ``admin.AdminError`` with a message naming what was wrong."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from balancer import admin, cancel, pausing
from balancer.common import partitions
from balancer.common.keys import Keys
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings


@dataclass(frozen=True)
class Context:
    client: redis.Redis
    keys: Keys
    scripts: Scripts
    settings: Settings


    def each(self) -> list[Keys]:
        """The keys of every partition (a queue's settings are written to each)."""
        return partitions.every(self.client, self.keys)

    def scripts_of(self, keys: Keys) -> Scripts:
        return self.scripts if keys == self.keys else Scripts(self.client, keys)

    def holding(self, task_id: str) -> Keys:
        """The partition whose dlq holds ``task_id`` (partition 0 when none does)."""
        return admin.dlq_holders(self.client, self.each(), [task_id]).get(task_id, self.keys)


@dataclass(frozen=True)
class Action:
    params: tuple[str, ...]  # required fields of the JSON body
    run: Callable[[Context, Mapping[str, Any]], str]  # -> what was done, in words
    optional: tuple[str, ...] = ()


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise admin.AdminError(f"{name} must be a non-empty string")
    return value


def pause(ctx: Context, body: Mapping[str, Any]) -> str:
    queue = _text(body, "queue")
    for keys in ctx.each():
        admin.configure_queue(ctx.client, keys, queue, {"paused": "1"})
    return f"queue {queue} paused"


def resume(ctx: Context, body: Mapping[str, Any]) -> str:
    queue = _text(body, "queue")
    for keys in ctx.each():
        admin.configure_queue(ctx.client, keys, queue, {"paused": "0"})
    return f"queue {queue} resumed"


def set_queue(ctx: Context, body: Mapping[str, Any]) -> str:
    """Priority (an integer) and concurrency limit (an integer, or null to remove it)."""
    queue = _text(body, "queue")
    fields: dict[str, Any] = {}
    if "priority" in body:
        fields["priority"] = body["priority"]
    if "concurrency_limit" in body:
        limit = body["concurrency_limit"]
        fields["concurrency_limit"] = "" if limit is None else limit
    if not fields:
        raise admin.AdminError("give priority or concurrency_limit")
    for keys in ctx.each():
        admin.configure_queue(ctx.client, keys, queue, fields)
    return f"queue {queue} updated"


def retry_dead(ctx: Context, body: Mapping[str, Any]) -> str:
    task = _text(body, "task")
    keys = ctx.holding(task)
    queue = admin.retry_quarantined(ctx.client, keys, ctx.scripts_of(keys), task)
    return f"task {task} re-queued on {queue}"


def purge_dead(ctx: Context, body: Mapping[str, Any]) -> str:
    task = _text(body, "task")
    keys = ctx.holding(task)
    admin.purge_quarantined(ctx.client, keys, ctx.scripts_of(keys), task,
                            int(ctx.settings.result_ttl * 1000))
    return f"task {task} failed for good"


def cancel_flow(ctx: Context, body: Mapping[str, Any]) -> str:
    """Cancel a flow run: its queued tasks never start, running ones are stopped."""
    flow = _text(body, "flow")
    try:
        done = cancel.cancel_flow(ctx.client, partitions.flow_keys(ctx.keys, flow), flow,
                                  int(ctx.settings.result_ttl * 1000))
    except KeyError:
        raise admin.AdminError(f"no flow run {flow}") from None
    except cancel.CancelError as exc:
        raise admin.AdminError(str(exc)) from None
    if not done.cancelled:
        return f"flow {flow} is already {done.state}: nothing to cancel"
    return f"flow {flow} cancelled: {done.cancelled} tasks"


def resume_flow(ctx: Context, body: Mapping[str, Any]) -> str:
    """Resume a run whose @flow function waits in pause_flow_run (no input: its
    wait_for_input, if any, gets none)."""
    flow = _text(body, "flow")
    try:
        pausing.resume_flow_run(flow, client=ctx.client, namespace=ctx.keys.namespace)
    except ValueError as exc:
        raise admin.AdminError(str(exc)) from None
    return f"flow {flow} resumed"


ACTIONS: dict[str, Action] = {
    "queue.pause": Action(("queue",), pause),
    "queue.resume": Action(("queue",), resume),
    "queue.set": Action(("queue",), set_queue, ("priority", "concurrency_limit")),
    "dlq.retry": Action(("task",), retry_dead),
    "dlq.purge": Action(("task",), purge_dead),
    "flow.cancel": Action(("flow",), cancel_flow),
    "flow.resume": Action(("flow",), resume_flow),
}


def run(ctx: Context, name: str, body: Mapping[str, Any]) -> str:
    """Run the named action; AdminError for an unknown one or bad input."""
    action = ACTIONS.get(name)
    if action is None:
        raise admin.AdminError(f"no action {name!r}; known: {', '.join(sorted(ACTIONS))}")
    unknown = set(body) - set(action.params) - set(action.optional)
    if unknown:
        raise admin.AdminError(f"action {name} takes no {', '.join(sorted(unknown))}")
    return action.run(ctx, body)
