"""A flow on a schedule, fired by the cluster's leader dispatcher (a cluster is needed:
the embedded one lives only as long as this script).

    BALANCER_REDIS_URL=redis://HOST:6379/0 python examples/scheduled.py
    balancer schedule add examples.scheduled:flow --cron "*/5 * * * *" --param factor=3
    balancer schedule ls
"""

import os
import sys
from datetime import timedelta

from balancer import Flow, Parameter, task
from balancer.schedules import IntervalSchedule


@task
def extract() -> list[int]:
    return [1, 2, 3, 4]


@task
def transform(rows: list[int], factor: int = 10) -> list[int]:
    return [r * factor for r in rows]


@task
def load(rows: list[int]) -> int:
    return sum(rows)


with Flow("scheduled-etl", schedule=IntervalSchedule(interval=timedelta(seconds=10))) as flow:
    factor = Parameter("factor", default=10)
    total = load(transform(extract(), factor=factor))


if __name__ == "__main__":
    if not os.environ.get("BALANCER_REDIS_URL"):
        sys.exit("set BALANCER_REDIS_URL: a schedule is kept and fired by a cluster")
    schedule_id = flow.register_schedule(parameters={"factor": 2})
    print(f"schedule {schedule_id} registered: every 10 s; see `balancer schedule ls` and"
          f" `balancer flows`; remove it with `balancer schedule rm {schedule_id}`")
