"""Prefect 1's ``prefect.engine.signals``: SKIP, FAIL, RETRY, ENDRUN (common/runsignals.py)."""

from balancer.common.runsignals import (
    ENDRUN,
    FAIL,
    RETRY,
    SKIP,
    Failed,
    PrefectStateSignal,
    Skipped,
    Success,
)

__all__ = ["ENDRUN", "FAIL", "RETRY", "SKIP", "Failed", "PrefectStateSignal", "Skipped",
           "Success"]
