"""A pool child's bounds: it takes no lease past its task bound, and is due to retire at
the bound, or after a task that left it over its memory bound."""

from __future__ import annotations

import pytest
from balancer.worker.retire import Retirement


def test_no_bound_costs_nothing_and_never_retires() -> None:
    assert Retirement.of(0, 0) is None


def test_a_child_takes_no_lease_past_its_task_bound() -> None:
    retirement = Retirement(max_tasks=5)
    assert retirement.left(8) == 5
    for _ in range(3):
        assert retirement.after_task() is None
    assert retirement.left(8) == 2 and retirement.left(1) == 1


def test_a_child_is_due_to_retire_at_its_task_bound() -> None:
    retirement = Retirement(max_tasks=2)
    assert retirement.after_task() is None
    assert retirement.after_task() == "2 tasks (max_tasks_per_child 2)"


@pytest.mark.parametrize(("bound_mb", "due"), [(1, True), (1 << 20, False)])
def test_a_child_over_its_memory_bound_after_a_task_is_due_to_retire(bound_mb: int,
                                                                      due: bool) -> None:
    """This process holds more than 1 MB, and less than a terabyte."""
    why = Retirement(max_memory_mb=bound_mb).after_task()
    assert (why is not None) == due
    if due:
        assert why is not None and "over max_memory_per_child 1 MB" in why
