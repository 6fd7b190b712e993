"""Prefect 1's state handlers, declared on tasks, task classes and flows: what is taken,
what is refused at decoration, and how a chain of handlers is called."""

from __future__ import annotations

from typing import Any

import pytest
from balancer.common import statehandlers
from balancer.common.runsignals import (
    ENDRUN,
    Failed,
    Pending,
    Retrying,
    Running,
    Scheduled,
    Skipped,
    State,
    Success,
    TimedOut,
)

from balancer import Flow, Task, flow, task


def test_states_nest_as_prefect_1s_so_its_handlers_checks_read_the_same() -> None:
    assert Retrying().is_pending() and Retrying().is_scheduled() and Scheduled().is_pending()
    assert Skipped().is_successful() and Skipped().is_finished() and not Skipped().is_failed()
    assert TimedOut().is_failed() and not Retrying().is_failed() and Running().is_running()
    assert ENDRUN(Skipped()).mode == "skip" and ENDRUN(Retrying()).mode == "again"
    assert ENDRUN(Running()).mode == "final"  # no run ends running: it fails


def test_handlers_are_called_in_order_each_given_the_last_answer() -> None:
    seen: list[str] = []

    def first(obj: Any, old: State, new: State) -> State:
        seen.append(f"first {type(new).__name__}")
        return Failed("no")

    def second(obj: Any, old: State, new: State) -> None:
        seen.append(f"second {type(new).__name__}")

    answer = statehandlers.call("t", [first, second], Running(), Success())
    assert isinstance(answer, Failed) and seen == ["first Success", "second Failed"]


def test_on_failure_is_called_with_the_failed_state_only() -> None:
    got: list[State] = []
    obj = Flow("f", on_failure=lambda flow, state: got.append(state))
    handlers = statehandlers.of(obj)
    statehandlers.call(obj, handlers, Pending(), Running())
    statehandlers.call(obj, handlers, Running(), Retrying())
    failed = Failed("boom")
    statehandlers.call(obj, handlers, Running(), failed)
    assert got == [failed]


@pytest.mark.parametrize("given, said", [
    ({"state_handlers": print}, "state_handlers must be a list of functions"),
    ({"state_handlers": "h"}, "state_handlers must be a list of functions"),
    ({"state_handlers": [1]}, "state_handlers holds 1, which is not callable"),
    ({"on_failure": 5}, "on_failure must be a function fn(obj, state) (Prefect 1) or a list"
                        " of hooks fn(obj, run, state) (Prefect 2/3), got int"),
    ({"on_failure": [5]}, "on_failure holds 5, which is not callable"),
    ({"on_completion": print}, "on_completion must be a list of functions")])
def test_handlers_that_are_not_functions_are_refused_at_decoration(
        given: dict[str, Any], said: str) -> None:
    with pytest.raises(TypeError, match=r"task 'f': " + said.replace("(", r"\(").replace(
            ")", r"\)")):
        task(name="f", **given)(lambda: None)
    if "on_completion" not in given:  # Prefect 1's flows take no Prefect 2/3 hooks
        with pytest.raises(TypeError, match="flow 'g': "):
            Flow("g", **given)


def test_a_prefect_1_flow_refuses_prefect_2_hooks_and_a_flow_function_takes_them() -> None:
    with pytest.raises(TypeError, match="hooks in a list are Prefect 2/3's: give them to @flow"):
        Flow("g", on_failure=[print])
    with pytest.raises(TypeError, match="flow 'h': on_running holds 1, which is not callable"):
        flow(name="h", on_running=[1])(lambda: None)
    assert flow(on_completion=[print])(lambda: None).options.on_completion == (print,)


def note(obj: Any, old: State, new: State) -> None:
    pass


class Declared(Task):
    state_handlers = [note]

    def run(self) -> None:
        pass


def test_a_task_class_takes_its_handlers_from_its_body_not_its_constructor() -> None:
    assert Declared().state_handlers == [note]
    assert statehandlers.of(Declared) == [note]  # what a worker, importing the class, finds
    with pytest.raises(ValueError, match="give state_handlers in its body"):
        Declared(state_handlers=[print])
