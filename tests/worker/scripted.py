"""Helpers of the worker's unit tests: outcomes as slots hand them over, leases taken as
slots take them, and a spy on the scripts' calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from balancer.common import codec
from balancer.common.codec import ErrorInfo
from balancer.common.scripts import Done, Scripts
from balancer.common.signals import Lease
from balancer.worker.ack import Finished
from balancer.worker.outcome import Outcome

from tests.common.lua.db import STARTED, Db, W


class Spy:
    """Wraps a Scripts method: records each call's arguments, and runs ``before`` (which
    may block or raise) ahead of the real call."""

    def __init__(self, scripts: Scripts, name: str,
                 before: Callable[[int], None] = lambda _: None) -> None:
        self.real = getattr(scripts, name)
        self.before = before
        self.calls: list[tuple[Any, ...]] = []
        setattr(scripts, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        self.before(len(self.calls))
        return self.real(*args, **kwargs)


def take_all(db: Db, *task_ids: str) -> dict[str, Lease]:
    """Lease the tasks to W and take their entries out of the inbox, as its slots do."""
    for t in task_ids:
        if not db.client.exists(db.keys.task(t)):
            db.put_task(t)
    db.lease(*task_ids)
    return {lease.task_id: lease for lease in db.inbox_leases(db.scripts.take(W, 100))}


def success(lease: Lease, value: object = "ok") -> Finished:
    done = Done(lease.task_id, lease.token, lease.queue, lease.flow, STARTED,
                codec.pack(value))
    return Finished(lease, Outcome(True, codec.pack(value)), STARTED, 0.01, done)


def failure(lease: Lease, **how: bool) -> Finished:
    outcome = Outcome.failure(ErrorInfo("ValueError", "boom"), **how)
    return Finished(lease, outcome, STARTED, 0.01, None)
