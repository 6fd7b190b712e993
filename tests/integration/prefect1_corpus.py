"""Prefect 1 snippets, written as Prefect 1's documentation writes them, with only the
import changed (``from prefect import ...`` -> ``from balancer import ...``).

Each ``snippet_*`` builds a flow and returns it with a check of the finished run that
asserts what Prefect 1 documents for it. Workers import the tasks from this module, so
every task is at module level. ``test_prefect1_corpus`` runs each one on the embedded
cluster and on a real one (``balancer serve`` and ``worker start`` processes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from balancer import Flow, flatten, task, unmapped

Check = Callable[[Any], None]


# -- mapping ------------------------------------------------------------------------------

@task
def get_numbers() -> list[int]:
    return [1, 2, 3]


@task
def inc(x: int) -> int:
    return x + 1


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def add_all(xs: list[int]) -> int:
    return sum(xs)


@task
def duplicate(x: int) -> list[int]:
    return [x, x]


@task
def nothing() -> list[int]:
    return []


@task
def just_a_number() -> int:
    return 7


@task
def invert(x: float) -> float:
    return 1 / x


@task(trigger="all_finished")
def collect(xs: list[Any]) -> list[Any]:
    return xs


def snippet_map_reduce() -> tuple[Flow, Check]:
    """Prefect 1 docs, "Mapping": map over an upstream result, reduce the list."""
    with Flow("map-reduce") as flow:
        numbers = get_numbers()
        first_map = inc.map(numbers)
        second_map = inc.map(first_map)
        reduction = add_all(second_map)

    def check(state: Any) -> None:
        assert state.is_successful()
        assert state.result[first_map].result == [2, 3, 4]
        assert state.result[second_map].result == [3, 4, 5]
        assert state.result[reduction].result == 12
    return flow, check


def snippet_map_literal_with_unmapped() -> tuple[Flow, Check]:
    """``unmapped``: the same value for every run; a list given in code."""
    with Flow("unmapped") as flow:
        result = add.map([1, 2, 3], y=unmapped(10))
        keyed = add.map(x=[1, 2], y=[10, 20, 30])  # mapped over the shortest

    def check(state: Any) -> None:
        assert state.result[result].result == [11, 12, 13]
        assert state.result[keyed].result == [11, 22]
    return flow, check


def snippet_flatten() -> tuple[Flow, Check]:
    """``flatten``: map over the items of a list of lists."""
    with Flow("flatten") as flow:
        nested = duplicate.map(get_numbers())
        flat = inc.map(flatten(nested))

    def check(state: Any) -> None:
        assert state.result[nested].result == [[1, 1], [2, 2], [3, 3]]
        assert state.result[flat].result == [2, 2, 3, 3, 4, 4]
    return flow, check


def snippet_empty_map() -> tuple[Flow, Check]:
    """A map over an empty list gives an empty list downstream."""
    with Flow("empty") as flow:
        mapped = inc.map(nothing())
        total = add_all(mapped)

    def check(state: Any) -> None:
        assert state.is_successful()
        assert state.result[mapped].result == []
        assert state.result[total].result == 0
    return flow, check


def snippet_a_failed_run_fails_the_reduce() -> tuple[Flow, Check]:
    """One mapped run fails: the map fails, a reduce with the default trigger does not
    run, one with ``all_finished`` gets every result (None for the failed one)."""
    with Flow("map-failure") as flow:
        inverted = invert.map([1, 0, 4])
        total = add_all(inverted)
        everything = collect(inverted)

    def check(state: Any) -> None:
        assert state.is_failed()
        assert state.result[inverted].is_failed()
        assert "1 of 3 mapped runs" in state.result[inverted].message
        assert state.result[total].is_failed() and state.result[total].result is None
        assert state.result[everything].result == [1.0, None, 0.25]
    return flow, check


def snippet_mapping_over_a_number_fails_with_a_named_error() -> tuple[Flow, Check]:
    with Flow("not-a-list") as flow:
        mapped = inc.map(just_a_number())
        after = add_all(mapped)

    def check(state: Any) -> None:
        assert state.is_failed()
        error = state.result[mapped].error
        assert error.type == "balancer.MapError"
        assert "cannot map over argument at position 0: it is a int, not a list" in (
            error.message)
        assert state.result[after].is_failed()
    return flow, check


def snippet_set_dependencies_mapped() -> tuple[Flow, Check]:
    """``flow.set_dependencies(..., mapped=True)``: the keyword tasks are mapped over."""
    flow = Flow("set-dependencies-mapped")
    flow.set_dependencies(inc, keyword_tasks={"x": get_numbers}, mapped=True)
    flow.set_dependencies(add_all, keyword_tasks={"xs": inc})

    def check(state: Any) -> None:
        assert state.result[inc].result == [2, 3, 4]
        assert state.result[add_all].result == 9
    return flow, check


SNIPPETS: dict[str, Callable[[], tuple[Flow, Check]]] = {
    name.removeprefix("snippet_"): fn for name, fn in dict(globals()).items()
    if name.startswith("snippet_") and callable(fn)}
