"""Flows the schedule tests register; the CLI imports them as
``tests.integration.scheduled:<name>`` (workers import their tasks from ``tasks``)."""

from __future__ import annotations

from datetime import timedelta

from balancer import Flow, Parameter
from balancer.schedules import IntervalSchedule
from tests.integration.tasks import add, multiply, square, total

# (n + 1) * 10, every second: a run's result tells its parameter.
with Flow("every-second", schedule=IntervalSchedule(interval=timedelta(seconds=1))) as every_second:
    n = Parameter("n", default=1)
    result = multiply(add(n, 1), 10)

# Without a schedule of its own: the CLI's --cron or --every gives one.
with Flow("unscheduled") as unscheduled:
    add(1, 2)

# A map over a list given in code: its gated task waits in the gate for the dispatcher.
with Flow("mapped-every-second",
          schedule=IntervalSchedule(interval=timedelta(seconds=1))) as mapped:
    summed = total(square.map([1, 2, 3]))
