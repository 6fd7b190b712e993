"""Prefect 2/3's ``prefect.states``: the states a task or a ``@flow`` function returns to
end its run in, as Prefect's tutorials write it::

    @flow
    def nightly():
        if not check().result():
            return Failed(message="the check did not pass")
        return Completed(message="all good")

A task that returns ``Failed(...)`` fails for good (no retry), with the message as its
error; one that returns ``Completed(data=x)`` completes with ``x`` as its result. A flow
function that returns ``Failed(...)`` ends its run failed: calling it raises
``FailedRun`` with the message (``return_state=True`` returns the failed state), as
Prefect's does; ``Completed(message=..., data=x)`` ends it completed with ``x`` as what
the call returns. A state ``t(return_state=True)`` gave may be returned as well. These are
the states of Prefect 1's ``balancer.engine.state``, which a run ends in the same way.
"""

from __future__ import annotations

from typing import Any

from balancer.common import runsignals


class FailedRun(Exception):
    """A ``@flow`` function's run ended failed because the function returned a failed
    state: its message (Prefect's ``prefect.exceptions.FailedRun``)."""


def Completed(message: str | None = None, data: Any = None) -> runsignals.State:
    """Prefect's name for Prefect 1's Success."""
    return runsignals.Success(message, data)


def Failed(message: str | None = None, data: Any = None) -> runsignals.State:
    return runsignals.Failed(message, data)


__all__ = ["Completed", "Failed", "FailedRun"]
