"""Prefect 1's API pieces checked where they are built, before anything runs: mapping
arguments, triggers, task classes, control flow outside a flow."""

from __future__ import annotations

from typing import Any

import pytest

from balancer import Flow, FlowError, MapError, Task, case, flatten, merge, task, unmapped
from balancer.mapping import MapSpec, items, split
from balancer.triggers import all_finished, any_failed, manual_only, name_of


@task
def add(x: int, y: int) -> int:
    return x + y


def test_every_argument_is_mapped_unless_unmapped() -> None:
    args, kwargs, spec = split(([1, 2], unmapped(3)), {"z": flatten([[1], [2]])})
    assert (args, kwargs) == (([1, 2], 3), {"z": [[1], [2]]})
    assert spec == MapSpec(positions=(0,), keywords=("z",), flat=("z",))


def test_items_name_what_cannot_be_mapped_over() -> None:
    spec = MapSpec(positions=(0,), keywords=("y",), flat=("y",))
    with pytest.raises(MapError, match="cannot map over argument at position 0: it is a str"):
        items("t", spec, ["abc"], {"y": [[1]]}, 10)
    with pytest.raises(MapError, match="cannot flatten argument 'y': item 1 is a int"):
        items("t", spec, [[1, 2]], {"y": [[1], 2]}, 10)
    assert items("t", spec, [[1, 2, 3]], {"y": [[10], [20, 30]]}, 10) == [
        ([1], {"y": 10}), ([2], {"y": 20}), ([3], {"y": 30})]


def test_a_map_needs_one_mapped_argument_and_a_flow() -> None:
    with pytest.raises(RuntimeError, match="inside `with Flow"):
        add.map([1], [2])
    with Flow("f"), pytest.raises(MapError, match="at least one argument"):
        add.map(unmapped(1), unmapped(2))


def test_triggers_are_named_or_refused() -> None:
    assert name_of(all_finished) == "all_finished" and name_of("any_failed") == "any_failed"
    assert task(trigger=any_failed)(lambda: 1).trigger == "any_failed"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trigger 'manual_only' is not supported"):
        name_of("manual_only")
    with pytest.raises(ValueError, match="trigger 'manual_only' is not supported"):
        task(trigger=manual_only)(lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not supported"):
        name_of(lambda states: True)


class NoRun(Task):
    pass


class WithRun(Task):
    def run(self, x: int) -> int:
        return x


def test_a_task_class_needs_a_run_method_and_takes_task_options() -> None:
    with pytest.raises(TypeError, match="a run method"):
        NoRun()
    t = WithRun(name="w", max_retries=2, trigger="all_finished")
    assert (t.name, t.retries, t.trigger, t.gated) == ("w", 2, "all_finished", True)
    assert t(5) == 5  # outside a flow: just runs
    assert t.path.endswith(":WithRun")


def test_control_flow_is_used_inside_a_flow() -> None:
    node: Any = None
    with pytest.raises(FlowError, match="inside `with Flow"), case(node, True):
        pass
    with pytest.raises(FlowError, match="inside `with Flow"):
        merge(node)


def test_a_case_block_makes_its_first_tasks_wait_for_the_comparison() -> None:
    with Flow("case") as flow:
        cond = add(1, 2)
        with case(cond, 3):
            first = add(1, 1)
            second = add(first, 1)
    compare = next(n for n in flow.nodes if n.task.name == "case")
    assert compare in first.upstream and compare not in second.upstream
    assert cond in compare.upstream


class Chatty(Task):
    log_stdout = True

    def run(self) -> None:
        print("hi")


def test_log_stdout_is_an_option_of_task_and_of_a_task_class_body() -> None:
    assert task(log_stdout=True)(lambda: None).log_stdout is True
    assert task(lambda: None).log_stdout is False
    assert Chatty().log_stdout is True and WithRun().log_stdout is False
    assert Chatty(log_stdout=True).log_stdout is True  # the same as its body: no harm


def test_log_stdout_given_to_a_task_class_constructor_is_refused_where_workers_miss_it() -> None:
    with pytest.raises(ValueError, match="task class WithRun: give log_stdout in its body"):
        WithRun(log_stdout=True)
    with pytest.raises(ValueError, match=r"Chatty: give log_stdout in its body \(log_stdout ="
                                         r" False\)"):
        Chatty(log_stdout=False)


def test_prefect_2s_log_prints_is_log_stdout() -> None:
    assert task(log_prints=True)(lambda: None).log_stdout is True


def test_prefect_1_flow_deployment_options_are_taken_and_reference_tasks_set() -> None:
    @task
    def first() -> int:
        return 1

    @task
    def second(x: int) -> int:
        return x

    executor = object()
    with Flow("deployed", executor=executor, run_config={"labels": ["x"]}, storage=None,
              validate=False) as flow:
        a = first()
        second(a)
    assert flow.executor is executor and flow.run_config == {"labels": ["x"]}
    kept = Flow("kept", tasks=[first, second], reference_tasks=[first])
    assert {n.task for n in kept.reference_tasks()} == {first}
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*bogus"):
        Flow("x", bogus=1)
    with pytest.raises(TypeError, match="terminal_state_handler is not supported"):
        Flow("x", terminal_state_handler=print)
    with pytest.raises(FlowError, match=r"run\(context=...\) is not supported"):
        flow.run(context={"today": "2026-01-01"})
