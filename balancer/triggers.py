"""Triggers, as Prefect 1 names them: when a task runs, given how its upstream tasks
ended. ``@task(trigger=all_finished)`` (or the name as a string).

A trigger is decided by the dispatcher once every upstream task has settled
(``balancer.gates``), never by user code: these functions name the rule and state it for
a list of upstream outcomes, and the gate applies the same rule (``passes``). Skipped
counts as successful, as in Prefect 1. A custom callable is refused: the rule must be
one the dispatcher knows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

ALL_SUCCESSFUL = "all_successful"
ALL_FINISHED = "all_finished"
ANY_FAILED = "any_failed"
ANY_SUCCESSFUL = "any_successful"
NOT_ALL_SKIPPED = "not_all_skipped"


def passes(trigger: str, total: int, failed: int, skipped: int) -> bool:
    """Whether ``trigger`` lets a task run whose ``total`` upstream tasks all settled,
    ``failed`` of them unsuccessfully and ``skipped`` of them skipped. No upstream at all
    passes every trigger (nothing failed and nothing could)."""
    if total <= 0:
        return True
    if trigger == ALL_SUCCESSFUL:
        return failed == 0
    if trigger == ANY_FAILED:
        return failed > 0
    if trigger == ANY_SUCCESSFUL:
        return failed < total
    if trigger == NOT_ALL_SKIPPED:
        return failed == 0 and skipped < total
    return True  # all_finished


def all_successful(states: Sequence[str]) -> bool:
    """Run when every upstream task completed or was skipped (the default)."""
    return passes(ALL_SUCCESSFUL, *_count(states))


def all_finished(states: Sequence[str]) -> bool:
    """Run once every upstream task settled, however it ended."""
    return passes(ALL_FINISHED, *_count(states))


always_run = all_finished


def any_failed(states: Sequence[str]) -> bool:
    """Run when at least one upstream task failed."""
    return passes(ANY_FAILED, *_count(states))


def any_successful(states: Sequence[str]) -> bool:
    """Run when at least one upstream task completed or was skipped."""
    return passes(ANY_SUCCESSFUL, *_count(states))


def not_all_skipped(states: Sequence[str]) -> bool:
    """Run when every upstream task succeeded and not all were skipped (``merge``'s);
    all skipped skips the task, a failure fails it."""
    return passes(NOT_ALL_SKIPPED, *_count(states))


def manual_only(states: Sequence[str]) -> bool:
    """Prefect 1's manual approval: not supported here (a task with it is refused)."""
    raise ValueError("trigger 'manual_only' is not supported")


_FUNCTIONS: dict[Callable[..., Any], str] = {
    all_successful: ALL_SUCCESSFUL, all_finished: ALL_FINISHED, any_failed: ANY_FAILED,
    any_successful: ANY_SUCCESSFUL, not_all_skipped: NOT_ALL_SKIPPED}
NAMES = frozenset(_FUNCTIONS.values())


def name_of(trigger: Any) -> str:
    """The trigger's name, from one of the functions above or its name. ValueError for
    anything else (manual_only and custom triggers are not supported)."""
    if isinstance(trigger, str) and trigger in NAMES:
        return trigger
    if callable(trigger) and trigger in _FUNCTIONS:
        return _FUNCTIONS[trigger]
    shown = trigger if isinstance(trigger, str) else getattr(trigger, "__name__", repr(trigger))
    raise ValueError(f"trigger {shown!r} is not supported: use one of"
                     f" {', '.join(sorted(NAMES))} (balancer.triggers)")


def _count(states: Sequence[str]) -> tuple[int, int, int]:
    bad = {"failed", "upstream_failed", "dead"}
    return (len(states), sum(s in bad for s in states), sum(s == "skipped" for s in states))
