"""Prefect 1's ``prefect.engine.state``: the states ENDRUN takes (Success, Failed,
Skipped, Retrying) and state handlers are given (common/runsignals.py), Cached among
them."""

from balancer.common.runsignals import (
    Cached,
    Cancelled,
    Failed,
    Finished,
    Looped,
    Pending,
    Retrying,
    Running,
    Scheduled,
    Skipped,
    State,
    Success,
    TimedOut,
)

__all__ = ["Cached", "Cancelled", "Failed", "Finished", "Looped", "Pending", "Retrying", "Running",
           "Scheduled", "Skipped", "State", "Success", "TimedOut"]
