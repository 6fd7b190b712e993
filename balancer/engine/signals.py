"""Prefect 1's ``prefect.engine.signals``: SKIP, FAIL, RETRY, ENDRUN, LOOP
(common/runsignals.py)."""

from balancer.common.runsignals import (
    ENDRUN,
    FAIL,
    LOOP,
    RETRY,
    SKIP,
    Failed,
    PrefectStateSignal,
    Skipped,
    Success,
)

__all__ = ["ENDRUN", "FAIL", "LOOP", "RETRY", "SKIP", "Failed", "PrefectStateSignal", "Skipped",
           "Success"]
