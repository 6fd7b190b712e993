"""Prefect 1's ``prefect.engine.state``: the states ENDRUN takes (Success, Failed,
Skipped, Retrying) and state handlers are given (common/runsignals.py)."""

from balancer.common.runsignals import (
    Cancelled,
    Failed,
    Finished,
    Pending,
    Retrying,
    Running,
    Scheduled,
    Skipped,
    State,
    Success,
    TimedOut,
)

__all__ = ["Cancelled", "Failed", "Finished", "Pending", "Retrying", "Running", "Scheduled",
           "Skipped", "State", "Success", "TimedOut"]
