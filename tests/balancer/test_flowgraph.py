"""Prefect 1's introspection of a flow's graph (balancer/flowgraph.py): the lines a
Prefect 1 user's tooling and tests call on a built flow, before anything runs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from balancer import Edge, Flow, FlowError, Parameter, Task, tags, task
from balancer.run import TaskResult


@task
def extract(source: str) -> list[int]:
    return [1, 2, 3]


@task(tags=["db"])
def transform(rows: list[int], factor: int = 2) -> list[int]:
    return [r * factor for r in rows]


@task
def load(rows: list[int]) -> int:
    return len(rows)


@task
def inc(x: int) -> int:
    return x + 1


class Report(Task):
    def run(self, total: int) -> str:
        return f"{total} rows"


def etl() -> tuple[Flow, dict[str, Any]]:
    with Flow("etl") as flow:
        source = Parameter("source", default="db")
        rows = extract(source)
        with tags("heavy"):
            doubled = transform(rows, factor=3)
        loaded = load(rows=doubled)
        bumped = inc.map([1, 2])
        report = Report(name="report")(loaded, upstream_tasks=[bumped])
    return flow, {"rows": rows, "doubled": doubled, "loaded": loaded, "bumped": bumped,
                  "report": report, "source": source}


def test_tasks_edges_and_their_keys_are_the_calls_and_the_arguments_they_feed() -> None:
    flow, n = etl()
    assert flow.tasks == {n["rows"], n["doubled"], n["loaded"], n["bumped"], n["report"]}
    assert flow.edges == {
        Edge(n["rows"], n["doubled"], "rows"),  # positional, bound to the signature
        Edge(n["doubled"], n["loaded"], "rows"),  # by keyword
        Edge(n["loaded"], n["report"], "total"),  # a Task class: its run's signature
        Edge(n["bumped"], n["report"], None),  # upstream_tasks=: order only
    }
    assert flow.edges_to(n["report"]) == {Edge(n["loaded"], n["report"], "total"),
                                          Edge(n["bumped"], n["report"], None)}
    assert flow.edges_from(n["rows"]) == {Edge(n["rows"], n["doubled"], "rows")}
    assert Edge(n["rows"], n["doubled"]).tasks == {n["rows"], n["doubled"]}


def test_upstream_downstream_root_and_terminal_tasks() -> None:
    flow, n = etl()
    assert flow.upstream_tasks(n["report"]) == {n["loaded"], n["bumped"]}
    assert flow.downstream_tasks(n["rows"]) == {n["doubled"]}
    assert flow.root_tasks() == {n["rows"], n["bumped"]}  # a parameter is no task
    assert flow.terminal_tasks() == {n["report"]}
    assert flow.upstream_tasks(extract) == set()  # by its task, called once


def test_sorted_tasks_put_each_after_its_upstreams_and_can_start_from_roots() -> None:
    flow, n = etl()
    order = flow.sorted_tasks()
    assert set(order) == flow.tasks
    for edge in flow.edges:
        assert order.index(edge.upstream_task) < order.index(edge.downstream_task)
    assert list(flow) == list(order)
    assert flow.sorted_tasks(root_tasks=[n["doubled"]]) == (n["doubled"], n["loaded"],
                                                            n["report"])
    assert [t.name for t in flow.sorted_tasks(root_tasks=[n["bumped"]])] == ["inc", "report"]


def test_get_tasks_matches_every_condition_given() -> None:
    flow, n = etl()
    assert flow.get_tasks(name="transform") == [n["doubled"]]
    assert flow.get_tasks(tags=["db", "heavy"]) == [n["doubled"]]  # its own and its block's
    assert flow.get_tasks(tags=["db", "light"]) == []
    assert flow.get_tasks(task_type=Report) == [n["report"]]
    assert flow.get_tasks(name="load", task_type=Report) == []
    assert len(flow.get_tasks()) == 5


def test_parameters_are_a_mapping_and_called_the_set_of_them() -> None:
    flow, n = etl()
    assert flow.parameters["source"] is n["source"]
    assert flow.parameters() == {n["source"]}


def test_a_mapped_edge_says_so() -> None:
    with Flow("mapped") as flow:
        rows = extract("db")
        bumped = inc.map(rows)
    assert flow.edges == {Edge(rows, bumped, "x", mapped=True)}


def test_an_upstream_declared_outside_the_flow_is_in_its_graph() -> None:
    first, second = inc.copy(name="first"), inc.copy(name="second")
    second.set_upstream(first)
    flow = Flow("declared")
    flow.add_task(second)
    assert {t.name for t in flow.tasks} == {"first", "second"}
    assert [t.name for t in flow.root_tasks()] == ["first"]


@pytest.mark.usefixtures("no_graphviz")
def test_visualize_shows_a_runs_states_and_takes_prefect_1s_arguments() -> None:
    with Flow("viz") as flow:
        rows = extract("db")
        loaded = load(transform(rows))
    # A finished run's result[...] as a FlowRun reads it from Redis.
    run = SimpleNamespace(result={t: TaskResult("failed" if t is loaded else "completed")
                                  for t in flow.tasks})
    text = flow.visualize(flow_state=run)  # type: ignore[arg-type]
    assert text.splitlines()[1:] == [
        "  extract [default]: completed",
        "  transform [default]: completed <- extract (as rows)",
        "  load [default]: failed <- transform (as rows)",
    ]
    with pytest.raises(TypeError, match="filename="):
        flow.visualize("graph.png")  # type: ignore[arg-type]


def test_bind_names_what_it_cannot_bind_and_needs_a_flow() -> None:
    flow = Flow("bound")
    with pytest.raises(TypeError, match=r"task 'load': bind: .*unexpected keyword"):
        load.bind(rows=[1], nope=2, flow=flow)
    with pytest.raises(ValueError, match="need a flow"):
        load.bind(rows=[1])
    Report(name="r").bind(total=1, flow=flow)  # a task class binds its run's arguments
    assert [(t.name, t.kwargs) for t in flow.tasks] == [("r", {"total": 1})]
    with pytest.raises(TypeError, match=r"\*rows has none: call the task instead"):
        spread.bind(1, 2, flow=flow)
    keywords = Flow("keywords")
    options.bind(1, retries=3, flow=keywords)  # **kwargs by name, as Prefect 1's
    assert [t.kwargs for t in keywords.tasks] == [{"first": 1, "retries": 3}]


@task
def spread(*rows: int) -> int:
    return len(rows)


@task
def options(first: int, **more: Any) -> int:
    return first


def test_asking_about_a_task_the_flow_does_not_call_is_an_error_and_adds_nothing() -> None:
    """A question about the graph leaves it as it is: asking about a task the flow does
    not call added it to the flow (and so to every run submitted after)."""
    flow, _ = etl()
    before = flow.tasks
    for ask in (flow.upstream_tasks, flow.downstream_tasks, flow.edges_to, flow.edges_from):
        with pytest.raises(FlowError, match="'double' is not part of flow 'etl'"):
            ask(double)
    with pytest.raises(FlowError, match="not part of flow 'etl'"):
        flow.sorted_tasks(root_tasks=[double])
    assert flow.tasks == before


def test_a_task_bound_as_an_argument_and_inside_another_is_still_passed_as_the_first() -> None:
    flow = Flow("twice")
    first = extract.copy(name="first").bind("db", flow=flow)
    options.bind(first, more=[first], flow=flow)  # first as `first`, and inside `more`
    assert flow.node_of(options).upstream == {flow.node_of(first): "first"}


@task
def double(x: int) -> int:
    return 2 * x
