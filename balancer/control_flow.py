"""Prefect 1's control flow: ``case`` blocks, ``merge``, ``ifelse`` and ``switch``, built
on skips as Prefect 1 builds them.

    with Flow("branches") as flow:
        cond = check_condition()
        with case(cond, True):
            a = action_if_true()
        with case(cond, False):
            b = action_if_false()
        result = merge(a, b)

``case(cond, value)`` adds a comparison task (``compare_value``) downstream of ``cond``
and upstream of every task called in the block that has no upstream task of its own in
the block: when ``cond``'s result is not ``value`` the comparison raises SKIP, which
skips the block's tasks and their dependents. ``merge`` runs on skips
(``skip_on_upstream_skip=False``, trigger ``not_all_skipped``) and returns the first
result that is not None. The tasks live in this module, which every worker may import
(``importpath.BUILTIN_TASK_MODULES``).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from balancer import building
from balancer.common.runsignals import SKIP
from balancer.flow import Flow, FlowError, Node
from balancer.task import Task, task


@task(name="case")
def compare_value(value: Any, expected: Any) -> None:
    """Skip (and so everything downstream) unless ``value`` is ``expected``."""
    if value != expected:
        raise SKIP(f'Provided value "{value}" did not match "{expected}"')


@task(name="merge", trigger="not_all_skipped", skip_on_upstream_skip=False)
def merge_values(*values: Any) -> Any:
    """The first value that is not None (a skipped branch gives None)."""
    return next((v for v in values if v is not None), None)


@task(name="getitem")
def get_item(value: Any, index: Any) -> Any:
    """``value[index]``: what ``ref[i]``, and unpacking a task with ``nout``, add to a
    flow (Prefect 1's GetItem)."""
    return value[index]


@task(name="as_bool")
def as_bool(value: Any) -> bool:
    return bool(value)


class FilterTask(Task):
    """Prefect 1's ``FilterTask``: the items of a list (a map's results) its filter
    keeps; by default those that are not None and not an exception, so that
    ``FilterTask()(mapped)`` drops the runs that failed (a map gives an ``all_finished``
    dependent None for each failed child). It runs after failed and skipped upstreams
    (trigger ``all_finished``, ``skip_on_upstream_skip=False``), as Prefect 1's.

    A filter of your own is a subclass's method, ``def filter_func(self, item) -> bool``
    (and ``def log_func(self, kept) -> str | None`` for a line in the task's log): the
    worker imports the class from your module. Given to the constructor, a function is
    refused: code does not travel with a task."""

    def __init__(self, filter_func: Any = None, log_func: Any = None, **options: Any) -> None:
        for name, given in (("filter_func", filter_func), ("log_func", log_func)):
            if given is not None:
                raise TypeError(f"FilterTask: give {name} as a method of a subclass"
                                f" (class Keep(FilterTask): def {name}(self, ...)), which"
                                " workers import from your module; a function given to"
                                " the constructor cannot travel with the task")
        options.setdefault("trigger", "all_finished")
        options.setdefault("skip_on_upstream_skip", False)
        super().__init__(**options)

    def filter_func(self, item: Any) -> bool:
        return item is not None and not isinstance(item, BaseException)

    def log_func(self, kept: list[Any]) -> str | None:
        return None

    def run(self, task_results: list[Any]) -> list[Any]:
        kept = [item for item in task_results if self.filter_func(item)]
        line = self.log_func(kept)
        if line:
            from balancer import get_run_logger

            get_run_logger().info(line)
        return kept


class case:  # Prefect's spelling: a class used as a function
    """``with case(task, value):``: the tasks called in the block run only when
    ``task``'s result equals ``value``; otherwise they are skipped."""

    def __init__(self, task: Node | Any, value: Any) -> None:
        self.task = task
        self.value = value
        self._flow: Flow | None = None
        self._first = 0

    def __enter__(self) -> case:
        flow = building.current_flow()
        if flow is None:
            raise FlowError("case(...) is used inside `with Flow(...)`")
        self._flow = flow
        self._first = len(flow.nodes)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        flow = self._flow
        if exc_type is not None or flow is None:
            return
        block = flow.nodes[self._first:]
        if not block:
            return
        members = set(block)
        cond = compare_value(self.task, self.value)
        for node in block:
            if not members.intersection(node.upstream):
                flow.set_dependency(cond, node)


def merge(*tasks: Node) -> Node:
    """The result of whichever branch ran: the first of ``tasks`` not skipped (and not
    None). Skipped when every branch was."""
    if building.current_flow() is None:
        raise FlowError("merge(...) is used inside `with Flow(...)`")
    node: Node = merge_values(*tasks)
    return node


def switch(condition: Node | Any, cases: dict[Any, Node | Task]) -> None:
    """Run the task of ``cases`` whose key equals ``condition``'s result; skip the others
    (and their dependents)."""
    flow = building.current_flow()
    if flow is None:
        raise FlowError("switch(...) is used inside `with Flow(...)`")
    for value, branch in cases.items():
        flow.set_dependency(compare_value(condition, value), branch)


def ifelse(condition: Node | Any, true_task: Node | Task | None,
           false_task: Node | Task | None) -> None:
    """Run ``true_task`` when ``condition``'s result is truthy, else ``false_task``; the
    other is skipped, with its dependents."""
    if building.current_flow() is None:
        raise FlowError("ifelse(...) is used inside `with Flow(...)`")
    branches = {value: t for value, t in ((True, true_task), (False, false_task))
                if t is not None}
    switch(as_bool(condition), branches)
