"""Prefect 2/3's ``allow_failure`` and ``quote``.

``allow_failure``: in a @flow function, a task given ``allow_failure(future)`` (as an
argument, or in ``wait_for``) runs once that upstream has ended, even if it failed.

The failed upstream's argument is None: Prefect passes its exception, which here stays in
the worker process that raised it (what Redis holds of it is its type, message and
traceback, on the upstream's state). Workers already read None for an upstream that
settled without a result (a Prefect 1 trigger's), so only the client's release of the
waiting task changes (balancer/dynamic.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from balancer.common.models import TaskState

# What an upstream under allow_failure may end as, for its dependent to run: any end but
# quarantined (an operator may run it again: its dependents wait, as for any other) and
# cancelled (so is the run, and the dependent with it).
ENDED = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.UPSTREAM_FAILED,
                   TaskState.SKIPPED})


@dataclass(frozen=True)
class allow_failure:  # Prefect's spelling
    """``downstream.submit(allow_failure(future))``, ``wait_for=[allow_failure(future)]``:
    the task runs even if that upstream failed (its argument is then None). Futures inside
    a list or dict wrapped so are allowed to fail too."""

    value: Any


@dataclass(frozen=True)
class quote:  # Prefect's spelling
    """``t(quote(rows))`` in a @flow function: ``rows`` is passed to the task as it is,
    never searched for futures (Prefect's way of sparing a large argument the walk; a
    future inside it is not waited for, and cannot be sent)."""

    value: Any
