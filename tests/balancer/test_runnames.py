"""Run names (balancer/runnames.py): Prefect's flow_run_name and task_run_name templates
and functions, checked at decoration and made from a call's arguments."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from balancer import flow, task
from balancer.runnames import MAX_LENGTH, RunNameError, check, parameters, render


def fetch(url: str, day: datetime.date, retries: int = 3) -> None: ...


def test_a_template_is_formatted_with_the_call_s_arguments_by_name_format_specs_included(
        ) -> None:
    params = parameters(fetch, ["a.com"], {"day": datetime.date(2026, 12, 3)})
    assert params == {"url": "a.com", "day": datetime.date(2026, 12, 3), "retries": 3}
    made = render("task 'fetch'", "task_run_name", "{url}-on-{day:%A}-x{retries}", params)
    assert made == "a.com-on-Thursday-x3"


def test_a_name_function_is_called_with_no_arguments() -> None:
    assert render("flow 'f'", "flow_run_name", lambda: "nightly", {}) == "nightly"


@pytest.mark.parametrize(("name", "why"), [
    (lambda: 1 / 0, "ZeroDivisionError: division by zero"),
    (lambda: 42, "returned int, not a string"),
    ("{url:%A}", "ValueError"),  # a str has no such format spec
])
def test_a_name_that_cannot_be_made_is_a_run_name_error_saying_why(name: Any, why: str
                                                                   ) -> None:
    with pytest.raises(RunNameError, match="task 'fetch'") as raised:
        render("task 'fetch'", "task_run_name", name, {"url": "a.com"})
    assert why in str(raised.value)


def test_a_long_name_is_cut() -> None:
    made = render("f", "flow_run_name", "{url}", {"url": "x" * 1000})
    assert len(made) == MAX_LENGTH and made.endswith("...")


@pytest.mark.parametrize(("name", "error", "says"), [
    (5, TypeError, "must be a string template or a function"),
    ("{urll}", ValueError, "'urll', that names no parameter of fetch (it takes url, day,"),
    ("{}", ValueError, "names no parameter"),
    ("{0}", ValueError, "names no parameter"),
    ("{url", ValueError, "is not a format string"),
])
def test_a_bad_template_is_refused_at_decoration(name: Any, error: type[Exception], says: str
                                                 ) -> None:
    with pytest.raises(error, match="task 'fetch': task_run_name") as raised:
        check("task 'fetch'", "task_run_name", name, fetch)
    assert says in str(raised.value)
    with pytest.raises(error):
        task(task_run_name=name)(fetch)
    with pytest.raises(error):
        flow(flow_run_name=name)(fetch)


def test_fields_may_reach_into_a_parameter_and_any_name_goes_with_kwargs() -> None:
    check("t", "task_run_name", "{url.upper}-{day[0]}", fetch)

    def loose(**kwargs: Any) -> None: ...

    check("t", "task_run_name", "{anything}", loose)
    check("t", "task_run_name", "{anything}", None)  # a task class: not known here


def test_a_copy_s_run_name_travels_and_may_only_name_parameters() -> None:
    from balancer.common.importpath import RUN_NAME_KEYWORD

    from balancer.submit import call_keywords

    named = task(task_run_name="fetch-{url}")(fetch)
    assert RUN_NAME_KEYWORD not in call_keywords(named)  # the module's: read there
    assert RUN_NAME_KEYWORD not in call_keywords(named.with_options(retries=1))
    copy = named.with_options(task_run_name="get-{url}-{day:%A}")
    assert call_keywords(copy)[RUN_NAME_KEYWORD] == "get-{url}-{day:%A}"
    again = copy.with_options(retries=2)  # a copy of the copy keeps sending it
    assert call_keywords(again)[RUN_NAME_KEYWORD] == "get-{url}-{day:%A}"
    with pytest.raises(ValueError, match="may only name parameters, not reach into one"):
        named.with_options(task_run_name="get-{url.upper}")
    with pytest.raises(TypeError, match="a copy's cannot be a function"):
        named.with_options(task_run_name=lambda: "x")
    with pytest.raises(ValueError, match="names no parameter of fetch"):
        named.with_options(task_run_name="{nope}")


@pytest.mark.parametrize("value", ["{x.__class__}", "{x[0]}", 5, None, "{x"])
def test_a_template_that_came_with_a_call_is_refused_unless_it_only_names_parameters(
        value: Any) -> None:
    from balancer.runnames import travelled

    with pytest.raises(RunNameError):
        travelled(value)
    assert travelled("a-{x}-{y:>3}") == "a-{x}-{y:>3}"


def test_a_copy_of_a_flow_can_change_its_run_name() -> None:
    f = flow(flow_run_name="a-{url}")(fetch)
    assert f.with_options(flow_run_name="b-{url}").options.flow_run_name == "b-{url}"
    with pytest.raises(ValueError, match="names no parameter"):
        f.with_options(flow_run_name="{nope}")


