"""Prefect 1 snippets, written as Prefect 1's documentation writes them, with only the
import changed (``from prefect import ...`` -> ``from balancer import ...``).

Each ``snippet_*`` builds a flow and returns it with a check of the finished run that
asserts what Prefect 1 documents for it. Workers import the tasks from this module, so
every task is at module level. ``test_prefect1_corpus`` runs each one on the embedded
cluster and on a real one (``balancer serve`` and ``worker start`` processes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis

import balancer as prefect
from balancer import Flow, Parameter, Task, case, flatten, ifelse, merge, task, triggers, unmapped
from balancer.engine import signals
from balancer.engine.signals import LOOP
from balancer.engine.state import Failed, Success

Check = Callable[[Any], None]


@dataclass(frozen=True)
class Ctx:
    """Where a snippet keeps counters its tasks share across workers: a Redis and a key
    prefix of the test's namespace."""

    url: str
    prefix: str

    def key(self, name: str) -> str:
        return self.prefix + name

    def count(self, name: str) -> int:
        return int(redis.Redis.from_url(self.url).get(self.key(name)) or 0)


def _incr(url: str, key: str) -> int:
    return int(redis.Redis.from_url(url).incr(key))


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


def snippet_map_reduce(ctx: Ctx) -> tuple[Flow, Check]:
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


@task
def numbers_up_to(n: int) -> list[int]:
    return list(range(1, n + 1))


@task
def compute_sum(nums: list[int]) -> int:
    return sum(nums)


def snippet_docs_mapping_example(ctx: Ctx) -> tuple[Flow, Check]:
    """Prefect 1's examples/mapping.py: inc mapped over get_numbers(n), add(2) mapped over
    that, then the total."""
    with Flow("Example: Mapping") as flow:
        n = Parameter("n", default=3)
        numbers = numbers_up_to(n)
        first_map = inc.map(numbers)
        second_map = add.map(first_map, unmapped(2))
        total = compute_sum(second_map)

    def check(state: Any) -> None:
        assert state.is_successful()
        assert state.result[second_map].result == [4, 5, 6]
        assert state.result[total].result == 15
    return flow, check


def snippet_map_literal_with_unmapped(ctx: Ctx) -> tuple[Flow, Check]:
    """``unmapped``: the same value for every run; a list given in code."""
    with Flow("unmapped") as flow:
        result = add.map([1, 2, 3], y=unmapped(10))
        keyed = add.map(x=[1, 2], y=[10, 20, 30])  # mapped over the shortest

    def check(state: Any) -> None:
        assert state.result[result].result == [11, 12, 13]
        assert state.result[keyed].result == [11, 22]
    return flow, check


def snippet_flatten(ctx: Ctx) -> tuple[Flow, Check]:
    """``flatten``: map over the items of a list of lists."""
    with Flow("flatten") as flow:
        nested = duplicate.map(get_numbers())
        flat = inc.map(flatten(nested))

    def check(state: Any) -> None:
        assert state.result[nested].result == [[1, 1], [2, 2], [3, 3]]
        assert state.result[flat].result == [2, 2, 3, 3, 4, 4]
    return flow, check


def snippet_empty_map(ctx: Ctx) -> tuple[Flow, Check]:
    """A map over an empty list gives an empty list downstream."""
    with Flow("empty") as flow:
        mapped = inc.map(nothing())
        total = add_all(mapped)

    def check(state: Any) -> None:
        assert state.is_successful()
        assert state.result[mapped].result == []
        assert state.result[total].result == 0
    return flow, check


def snippet_a_failed_run_fails_the_reduce(ctx: Ctx) -> tuple[Flow, Check]:
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


@task
def fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


def snippet_maps_of_maps_go_item_by_item(ctx: Ctx) -> tuple[Flow, Check]:
    """A map over a map runs item by item, as Prefect 1's: a failed item fails only the
    item mapped over it; the others run. The run's one terminal task (all_finished)
    succeeded, so the run did (Prefect 1's reference tasks)."""
    with Flow("item-by-item") as flow:
        first = fails_on_two.map([1, 2, 3])
        second = inc.map(first)
        final = collect(second)

    def check(state: Any) -> None:
        assert state.is_successful()
        assert "1 of 3 mapped runs" in state.result[first].message
        assert "1 of 3 mapped runs" in state.result[second].message
        assert state.result[final].result == [2, None, 4]
    return flow, check


def snippet_mapping_over_a_number_fails_with_a_named_error(ctx: Ctx) -> tuple[Flow, Check]:
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


def snippet_set_dependencies_mapped(ctx: Ctx) -> tuple[Flow, Check]:
    """``flow.set_dependencies(..., mapped=True)``: the keyword tasks are mapped over."""
    flow = Flow("set-dependencies-mapped")
    flow.set_dependencies(inc, keyword_tasks={"x": get_numbers}, mapped=True)
    flow.set_dependencies(add_all, keyword_tasks={"xs": inc})

    def check(state: Any) -> None:
        assert state.result[inc].result == [2, 3, 4]
        assert state.result[add_all].result == 9
    return flow, check


# -- triggers and signals ------------------------------------------------------------------

@task
def maybe_skip(x: int) -> int:
    if x == 0:
        raise signals.SKIP("nothing to do for zero")
    return x


@task
def passthrough(x: Any) -> Any:
    return x


@task(skip_on_upstream_skip=False)
def runs_on_skips(x: Any) -> str:
    return f"ran with {x!r}"


def snippet_skip_propagates_downstream(ctx: Ctx) -> tuple[Flow, Check]:
    """SKIP: the task is Skipped (a success); its dependents are skipped unless made with
    skip_on_upstream_skip=False, which run and get None."""
    with Flow("skip") as flow:
        skipped = maybe_skip(0)
        after = passthrough(skipped)
        further = passthrough(after)
        anyway = runs_on_skips(skipped)
        kept = maybe_skip(5)

    def check(state: Any) -> None:
        assert state.is_successful(), state.message
        assert state.result[skipped].is_skipped() and state.result[skipped].is_successful()
        assert "nothing to do for zero" in state.result[skipped].message
        assert state.result[after].is_skipped() and state.result[further].is_skipped()
        assert state.result[anyway].result == "ran with None"
        assert state.result[kept].result == 5
    return flow, check


@task(max_retries=3, retry_delay=timedelta(seconds=0))
def fails_for_good(url: str, key: str) -> None:
    _incr(url, key)
    raise signals.FAIL("no point in retrying")


@task
def retries_on_signal(url: str, key: str) -> str:
    if _incr(url, key) < 3:
        raise signals.RETRY("not ready yet")
    return "third run"


@task
def ends_early() -> None:
    raise signals.ENDRUN(Success("done early", result=42))


@task(max_retries=2)
def ends_failed(url: str, key: str) -> None:
    _incr(url, key)
    raise signals.ENDRUN(Failed("gave up"))


def snippet_fail_retry_and_endrun(ctx: Ctx) -> tuple[Flow, Check]:
    """FAIL fails at once whatever retries are left; RETRY runs again with no retries
    configured; ENDRUN ends the run in the state it carries."""
    with Flow("signals") as flow:
        failed = fails_for_good(ctx.url, ctx.key("fail"))
        retried = retries_on_signal(ctx.url, ctx.key("retry"))
        early = ends_early()
        gave_up = ends_failed(ctx.url, ctx.key("endrun"))

    def check(state: Any) -> None:
        assert state.is_failed()
        assert state.result[failed].is_failed()
        assert "no point in retrying" in state.result[failed].message
        assert ctx.count("fail") == 1
        assert state.result[retried].result == "third run" and ctx.count("retry") == 3
        assert state.result[early].result == 42
        assert state.result[gave_up].is_failed() and "gave up" in (
            state.result[gave_up].message)
        assert ctx.count("endrun") == 1
    return flow, check


@task
def boom() -> None:
    raise ValueError("boom")


@task(trigger=triggers.any_failed)
def alert() -> str:
    return "alerted"


@task(trigger=triggers.all_finished)
def cleanup() -> str:
    return "cleaned up"


@task(trigger=triggers.always_run)
def also_cleanup() -> str:
    return "always"


@task(trigger=triggers.any_successful)
def either(a: Any, b: Any) -> list[Any]:
    return [a, b]


@task(trigger=triggers.any_failed)
def not_needed() -> str:
    return "should not run"


def snippet_triggers(ctx: Ctx) -> tuple[Flow, Check]:
    """any_failed runs after a failure (and fails its trigger when nothing failed),
    all_finished/always_run run whatever happened, any_successful runs when one upstream
    succeeded (a failed upstream's result arrives as None)."""
    with Flow("triggers") as flow:
        bad = boom()
        good = get_numbers()
        alerted = alert(upstream_tasks=[bad, good])
        cleaned = cleanup(upstream_tasks=[bad])
        always = also_cleanup(upstream_tasks=[bad])
        mixed = either(good, bad)
        unneeded = not_needed(upstream_tasks=[good])

    def check(state: Any) -> None:
        assert state.is_failed()
        assert state.result[alerted].result == "alerted"
        assert state.result[cleaned].result == "cleaned up"
        assert state.result[always].result == "always"
        assert state.result[mixed].result == [[1, 2, 3], None]
        outcome = state.result[unneeded]
        assert outcome.is_failed() and outcome.error.type == "balancer.TriggerFailed"
        assert 'trigger was "any_failed"' in outcome.message
    return flow, check


def snippet_a_failure_a_cleanup_followed_leaves_the_run_successful(ctx: Ctx
                                                                     ) -> tuple[Flow, Check]:
    """Prefect 1 docs, "Reference tasks": a run's state is its reference tasks', by
    default its terminal ones. A cleanup with ``all_finished`` after a failure is the
    only terminal task: it succeeded, so the run did."""
    with Flow("cleanup-after-failure") as flow:
        bad = boom()
        cleaned = cleanup(upstream_tasks=[bad])

    def check(state: Any) -> None:
        assert state.is_successful() and not state.is_failed()
        assert state.result[bad].is_failed()
        assert state.result[cleaned].result == "cleaned up"
        assert flow.reference_tasks() == {cleaned}
        assert state.message == "All reference tasks succeeded."
    return flow, check


def snippet_set_reference_tasks(ctx: Ctx) -> tuple[Flow, Check]:
    """``flow.set_reference_tasks``: the run fails when a task named there fails, even
    with a cleanup after it."""
    with Flow("referenced") as flow:
        bad = boom()
        cleaned = cleanup(upstream_tasks=[bad])
    flow.set_reference_tasks([bad])

    def check(state: Any) -> None:
        assert state.is_failed()
        assert state.result[cleaned].result == "cleaned up"
    return flow, check


# -- control flow -------------------------------------------------------------------------

@task
def check_condition(x: int) -> bool:
    return x > 0


@task
def action_if_true() -> str:
    return "true branch"


@task
def action_if_false() -> str:
    return "false branch"


def snippet_case_and_merge(ctx: Ctx) -> tuple[Flow, Check]:
    """Prefect 1 docs, "Conditional logic": case blocks and merge."""
    with Flow("conditional-branches") as flow:
        x = Parameter("x", default=1)
        cond = check_condition(x)
        with case(cond, True):
            val1 = action_if_true()
            after_true = passthrough(val1)
        with case(cond, False):
            val2 = action_if_false()
        val = merge(val1, val2)

    def check(state: Any) -> None:
        assert state.is_successful(), state.message
        assert state.result[val].result == "true branch"
        assert state.result[after_true].result == "true branch"
        assert state.result[val2].is_skipped()
    return flow, check


def snippet_case_false_branch(ctx: Ctx) -> tuple[Flow, Check]:
    flow, _ = snippet_case_and_merge(ctx)
    flow.parameters["x"].default = -1
    merged = next(n for n in flow.nodes if n.task.name == "merge")
    after_true = next(n for n in flow.nodes if n.task is passthrough)

    def check(state: Any) -> None:
        assert state.is_successful(), state.message
        assert state.result[merged].result == "false branch"
        assert state.result[after_true].is_skipped()
    return flow, check


def snippet_ifelse(ctx: Ctx) -> tuple[Flow, Check]:
    with Flow("ifelse") as flow:
        cond = check_condition(0)
        yes = action_if_true()
        no = action_if_false()
        ifelse(cond, yes, no)
        after_yes = passthrough(yes)

    def check(state: Any) -> None:
        assert state.is_successful(), state.message
        assert state.result[no].result == "false branch"
        assert state.result[yes].is_skipped() and state.result[after_yes].is_skipped()
    return flow, check


# -- task classes -------------------------------------------------------------------------

class AddTask(Task):
    def __init__(self, default: int, **kwargs: Any) -> None:
        self.default = default
        super().__init__(**kwargs)

    def run(self, x: int, y: int | None = None) -> int:
        return x + (self.default if y is None else y)


class Doubler(Task):
    def run(self, x: int) -> int:
        return 2 * x


def snippet_task_classes(ctx: Ctx) -> tuple[Flow, Check]:
    """Prefect 1 docs, "Task classes": a subclass with run(), its constructor's own
    arguments and Task's options (name, max_retries), called in a flow and mapped."""
    add_task = AddTask(default=1, name="add with default", max_retries=2)
    doubler = Doubler()
    with Flow("task-classes") as flow:
        a = add_task(1, 2)
        b = add_task(10)
        doubled = doubler.map([1, 2, 3])

    def check(state: Any) -> None:
        assert add_task.name == "add with default" and add_task.retries == 2
        assert doubler.name == "Doubler"
        assert state.result[a].result == 3
        assert state.result[b].result == 11
        assert state.result[doubled].result == [2, 4, 6]
    return flow, check


def next_fibonacci(n: int) -> int:
    """The n-th Fibonacci number (the docs ask an API for it)."""
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


@task(max_retries=5, retry_delay=timedelta(seconds=0.05))
def compute_large_fibonacci(M: int) -> int:
    # we extract the accumulated task loop result from context
    loop_payload = prefect.context.get("task_loop_result", {})

    n = loop_payload.get("n", 1)
    fib = loop_payload.get("fib", 1)

    next_fib = next_fibonacci(n)

    if next_fib > M:
        return fib  # return statements end the loop

    raise LOOP(message=f"Fib {n}={next_fib}", result=dict(n=n + 1, fib=next_fib))


def snippet_task_looping(ctx: Ctx) -> tuple[Flow, Check]:
    """Prefect 1 docs, "Looping": the largest Fibonacci number below M, one LOOP per
    number, alone and mapped over several M."""
    with Flow("fibonacci") as flow:
        M = Parameter("M", default=100)
        fib_num = compute_large_fibonacci(M)
        ms = Parameter("ms", default=[10, 100, 1000, 1500])
        fib_nums = compute_large_fibonacci.map(ms)

    def check(state: Any) -> None:
        assert state.result[fib_num].result == 89
        assert state.result[fib_nums].result == [8, 89, 987, 987]
    return flow, check


SNIPPETS: dict[str, Callable[[Ctx], tuple[Flow, Check]]] = {
    name.removeprefix("snippet_"): fn for name, fn in dict(globals()).items()
    if name.startswith("snippet_") and callable(fn)}
