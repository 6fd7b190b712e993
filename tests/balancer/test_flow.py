"""balancer.task, balancer.flow and balancer.queue: declaring tasks and building flows.

Tasks here are made per test (``_tasks``): ``set_upstream`` outside a flow records the
dependency on the task itself, which must not leak from one test into another.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancer import Flow, FlowError, Node, Queue, Task, task, unmapped
from balancer.queue import DEFAULT_QUEUE


def _tasks(*names: str) -> list[Task]:
    def make(name: str) -> Task:
        def fn(*args: Any, **kwargs: Any) -> Any:
            return (name, args, kwargs)

        fn.__name__ = fn.__qualname__ = name
        return task(fn)

    return [make(n) for n in names]


# -- @task ---------------------------------------------------------------------------------


def test_bare_task_decorator_keeps_the_function_and_default_options() -> None:
    @task
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    assert isinstance(double, Task)
    assert double.name == "double"
    assert double.__name__ == "double"
    assert double.__doc__ == "Twice x."
    assert (double.queue_name, double.priority, double.retries, double.retry_delay,
            double.timeout) == (DEFAULT_QUEUE, 0, 0, 0.0, None)
    assert double.upstream == []


def test_task_decorator_with_options() -> None:
    @task(name="resize-image", queue_name="gpu", priority=3, retries=2, retry_delay=1.5,
          timeout=30)
    def resize() -> None: ...

    assert isinstance(resize, Task)
    assert (resize.name, resize.queue_name, resize.priority, resize.retries,
            resize.retry_delay, resize.timeout) == ("resize-image", "gpu", 3, 2, 1.5, 30)


@task
def module_level_task() -> str:
    return "ran"


def test_task_path_names_module_and_qualname() -> None:
    assert module_level_task.path == f"{__name__}:module_level_task"


def test_task_path_of_a_nested_function_is_an_error() -> None:
    (inner,) = _tasks("inner")
    inner.fn.__qualname__ = "outer.<locals>.inner"
    with pytest.raises(ValueError, match="module level"):
        _ = inner.path


def test_calling_a_task_outside_a_flow_just_runs_it() -> None:
    @task(retries=3)
    def add(x: int, y: int = 0) -> int:
        return x + y

    assert add(2, y=3) == 5


@pytest.mark.parametrize(
    "options",
    [
        {"queue_name": ""},
        {"queue_name": "*"},
        {"queue_name": "has space"},
        {"queue_name": "tab\there"},
        {"retries": -1},
        {"retry_delay": -0.1},
        {"timeout": 0},
        {"timeout": -5},
    ],
    ids=repr,
)
def test_invalid_task_options_raise_value_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        task(**options)(lambda: None)


def test_invalid_task_option_error_names_the_task() -> None:
    with pytest.raises(ValueError, match="'fetch'"):
        task(name="fetch", retries=-1)(lambda: None)


# -- Queue ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "*", "a b", " lead", "new\nline"])
def test_invalid_queue_names_raise_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="invalid queue name"):
        Queue(name)


@pytest.mark.parametrize("limit", [0, -1])
def test_queue_concurrency_limit_below_one_raises_value_error(limit: int) -> None:
    with pytest.raises(ValueError, match="concurrency_limit"):
        Queue("q", concurrency_limit=limit)


def test_queue_settings_default_to_unset() -> None:
    q = Queue("gpu")
    assert (q.priority, q.concurrency_limit) == (None, None)


# -- imperative flows ----------------------------------------------------------------------


def test_flow_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name"):
        Flow("")


def test_add_task_returns_one_node_per_task() -> None:
    (a,) = _tasks("a")
    flow = Flow("f")
    node = flow.add_task(a)
    assert flow.add_task(a) is node
    assert flow.nodes == [node]
    assert node.queue_name == DEFAULT_QUEUE


def test_add_task_with_a_queue_routes_the_node_and_records_the_queue() -> None:
    (a,) = _tasks("a")
    flow = Flow("f")
    fast = Queue("fast", priority=5)
    node = flow.add_task(a)
    flow.add_task(a, queue=fast)
    assert node.queue_name == "fast"
    assert flow.queues() == {"fast": fast}


def test_add_task_rejects_a_plain_function() -> None:
    with pytest.raises(TypeError, match="@task"):
        Flow("f").add_task(lambda: None)  # type: ignore[arg-type]


def test_set_upstream_outside_a_flow_is_folded_in_by_add_task() -> None:
    extract, transform, load = _tasks("extract", "transform", "load")
    transform.set_upstream(extract)
    load.set_upstream(transform, key="rows")

    flow = Flow("etl")
    flow.add_task(load)  # extract and transform come along
    order = flow.plan()

    assert [n.task for n in order] == [extract, transform, load]
    nodes = {n.task: n for n in order}
    assert nodes[transform].upstream == {nodes[extract]: None}
    assert nodes[load].upstream == {nodes[transform]: "rows"}


def test_set_downstream_outside_a_flow_mirrors_set_upstream() -> None:
    a, b = _tasks("a", "b")
    a.set_downstream(b, key="x")
    assert b.upstream == [(a, "x")]


def test_set_upstream_outside_a_flow_rejects_a_non_task() -> None:
    (a,) = _tasks("a")
    with pytest.raises(TypeError, match="expects a task"):
        a.set_upstream(lambda: None)


def test_set_upstream_with_key_inside_a_flow() -> None:
    a, b = _tasks("a", "b")
    with Flow("f") as flow:
        b.set_upstream(a, key="data")
    node_a, node_b = flow.node_of(a), flow.node_of(b)
    assert node_b.upstream == {node_a: "data"}
    assert a.upstream == b.upstream == []  # nothing leaked onto the tasks


def test_set_upstream_with_an_explicit_flow_outside_the_with_block() -> None:
    a, b = _tasks("a", "b")
    flow = Flow("f")
    b.set_upstream(a, flow=flow)
    assert flow.node_of(b).upstream == {flow.node_of(a): None}


def test_node_set_upstream_and_set_downstream() -> None:
    a, b, c = _tasks("a", "b", "c")
    flow = Flow("f")
    na, nb = flow.add_task(a), flow.add_task(b)
    nb.set_upstream(na, key="k")
    nb.set_downstream(c)
    assert nb.upstream == {na: "k"}
    assert flow.node_of(c).upstream == {nb: None}


def test_a_task_cannot_depend_on_itself() -> None:
    (a,) = _tasks("a")
    flow = Flow("f")
    with pytest.raises(FlowError, match="'a' cannot depend on itself"):
        a.set_upstream(a, flow=flow)


def test_cycle_raises_flow_error_naming_the_tasks() -> None:
    a, b, c = _tasks("alpha", "beta", "gamma")
    flow = Flow("loop")
    b.set_upstream(a, flow=flow)
    c.set_upstream(b, flow=flow)
    a.set_upstream(c, flow=flow)
    with pytest.raises(FlowError) as info:
        flow.plan()
    message = str(info.value)
    assert "'loop'" in message
    assert "cycle" in message
    for name in ("alpha", "beta", "gamma"):
        assert name in message
    assert " -> " in message


def test_cycle_declared_outside_the_flow_is_found_at_plan() -> None:
    a, b = _tasks("ping", "pong")
    a.set_upstream(b)
    b.set_upstream(a)
    flow = Flow("f")
    flow.add_task(a)
    with pytest.raises(FlowError, match=r"cycle: (ping -> pong -> ping|pong -> ping -> pong)"):
        flow.plan()


def test_plan_orders_a_diamond_upstream_first_and_is_repeatable() -> None:
    top, left, right, bottom = _tasks("top", "left", "right", "bottom")
    flow = Flow("diamond")
    bottom.set_upstream(left, flow=flow)
    bottom.set_upstream(right, flow=flow)
    left.set_upstream(top, flow=flow)
    right.set_upstream(top, flow=flow)
    first = [n.task.name for n in flow.plan()]
    assert first.index("top") < first.index("left") < first.index("bottom")
    assert first.index("top") < first.index("right") < first.index("bottom")
    assert [n.task.name for n in flow.plan()] == first


# -- functional flows ----------------------------------------------------------------------


def test_calling_tasks_inside_a_flow_makes_nodes_wired_by_their_arguments() -> None:
    fetch, parse, report = _tasks("fetch", "parse", "report")
    with Flow("pipeline") as flow:
        page = fetch("https://example.org")
        parsed = parse(page, strict=True)
        summary = report([parsed, {"raw": page}], title="t")

    assert all(isinstance(n, Node) for n in (page, parsed, summary))
    assert flow.nodes == [page, parsed, summary]
    assert page.args == ("https://example.org",)
    assert parsed.args == (page,)
    assert parsed.kwargs == {"strict": True}
    assert parsed.upstream == {page: None}
    assert set(summary.upstream) == {parsed, page}
    assert summary.kwargs == {"title": "t"}
    assert [n.task for n in flow.plan()] == [fetch, parse, report]


def test_tasks_run_again_after_the_flow_block_closes() -> None:
    (a,) = _tasks("a")
    with Flow("f"):
        assert isinstance(a(1), Node)
    assert a(1) == ("a", (1,), {})


def test_a_node_of_another_flow_is_refused() -> None:
    a, b = _tasks("a", "b")
    with Flow("one"):
        foreign = a()
    with Flow("two") as two, pytest.raises(FlowError, match="another flow"):
        b(foreign)
    with pytest.raises(FlowError, match="belongs to flow 'one'"):
        two.set_dependency(foreign, b)


def test_node_of_returns_the_single_call() -> None:
    a, b = _tasks("a", "b")
    with Flow("f") as flow:
        node = a()
    assert flow.node_of(a) is node
    with pytest.raises(KeyError, match="not part of flow"):
        flow.node_of(b)


def test_node_of_a_task_called_twice_is_an_error() -> None:
    (a,) = _tasks("a")
    with Flow("f") as flow:
        a(1)
        a(2)
    with pytest.raises(KeyError, match="called 2 times"):
        flow.node_of(a)


def test_set_upstream_on_a_task_called_twice_is_an_error() -> None:
    a, b = _tasks("a", "b")
    with Flow("f"):
        a(1)
        a(2)
        with pytest.raises((FlowError, KeyError)):
            b.set_upstream(a)


@pytest.mark.usefixtures("no_graphviz")
def test_visualize_without_graphviz_prints_the_dag_as_text(
        capsys: pytest.CaptureFixture[str]) -> None:
    extract, transform = _tasks("extract", "transform")
    with Flow("viz") as flow:
        a = extract()
        b = transform(a)
        transform(b)
    text = flow.visualize()
    assert text.splitlines() == [
        "flow viz: 3 tasks, in the order they can run",
        "  extract [default]",
        "  transform [default] <- extract",
        "  transform#2 [default] <- transform",
    ]
    assert capsys.readouterr().out.strip() == text


def test_validate_raises_for_a_cycle() -> None:
    extract, transform = _tasks("extract", "transform")
    flow = Flow("cycle")
    a, b = flow.add_task(extract), flow.add_task(transform)
    flow.add_edge(a, b)
    flow.add_edge(b, a)
    with pytest.raises(FlowError, match="cycle"):
        flow.validate()


@task(max_retries=1, tags=["etl"], queue_name="io")
def fetch(x: int) -> int:
    return x


def test_with_options_copies_a_task_with_the_options_that_travel_and_leaves_it_alone() -> None:
    """Prefect 2/3's task.with_options: a copy, Prefect's spellings taken, the original
    unchanged; the copy runs the same function, which the worker imports by its path."""
    copy = fetch.with_options(name="fetch-eu", retries=3, retry_delay_seconds=2,
                              timeout_seconds=5, tags=["eu"], description="ignored")
    assert (copy.name, copy.retries, copy.retry_delay, copy.timeout, copy.tags,
            copy.queue_name) == ("fetch-eu", 3, 2, 5, ["eu"], "io")
    assert (fetch.name, fetch.retries, fetch.tags) == ("fetch", 1, ["etl"])
    assert copy.path == fetch.path and copy(4) == 4
    with Flow("two-copies") as flow:
        fetch(1)
        copy(2)
    assert [n.task.name for n in flow.nodes] == ["fetch", "fetch-eu"]


@pytest.mark.parametrize("change, error, said", [
    ({"log_prints": True}, ValueError, "cannot change log_prints: the worker reads it"),
    ({"on_completion": [print]}, ValueError, "cannot change on_completion"),
    ({"retries": -1}, ValueError, "retries must be between 0 and 1000"),
    ({"bogus": 1}, TypeError, "unknown option(s) bogus")])
def test_with_options_refuses_what_a_copy_cannot_change_or_take(
        change: dict[str, object], error: type[Exception], said: str) -> None:
    with pytest.raises(error, match=re.escape(said)):
        fetch.with_options(**change)


def test_prefects_exponential_backoff_is_our_doubling_retry_delay() -> None:
    from balancer.tasks import exponential_backoff

    backoff = exponential_backoff(backoff_factor=10)
    assert backoff(3) == [10, 20, 40]  # Prefect's delays, and ours for retry_delay=10
    waits = task(retries=3, retry_delay_seconds=backoff)(fetch.fn)
    assert waits.retry_delay == 10
    assert fetch.with_options(retry_delay_seconds=backoff).retry_delay == 10


def test_a_list_of_retry_delays_is_kept_as_given_and_checked() -> None:
    from datetime import timedelta

    from balancer.options import delay_field

    listed = task(retries=3, retry_delay_seconds=[1, 10, 100])(fetch.fn)
    assert listed.retry_delay == (1, 10, 100)
    assert delay_field(listed.retry_delay) == "1,10,100,"
    assert delay_field((2.5,)) == "2.5,"  # a list of one stays a list: no doubling
    assert delay_field(3.0) == 3.0
    assert fetch.with_options(retry_delay_seconds=[timedelta(seconds=2)]).retry_delay == (2.0,)
    assert fetch.copy(retry_delay=[timedelta(minutes=1), 5]).retry_delay == (60.0, 5)
    for bad, said in [([], "must hold 1 to 50 of them, got 0"),
                      ([1] * 51, "must hold 1 to 50 of them, got 51"),
                      ([1, float("nan")], "retry_delay must be a finite number"),
                      ([1, -2], "retry_delay must be >= 0"), (["1"], "must be a number"),
                      (lambda n: n, "a function of your own would run unsigned")]:
        with pytest.raises(ValueError, match=re.escape(said)):
            task(retries=3, retry_delay_seconds=bad)(fetch.fn)


def test_prefect_1_copy_takes_its_names() -> None:
    from datetime import timedelta

    copy = fetch.copy(max_retries=4, retry_delay=timedelta(seconds=3),
                      timeout=timedelta(minutes=1))
    assert (copy.retries, copy.retry_delay, copy.timeout) == (4, 3.0, 60.0)
    assert fetch.copy() is not fetch and fetch.copy().retries == fetch.retries


def test_submit_inside_a_prefect_1_flow_says_to_call_the_task() -> None:
    with Flow("building"):
        with pytest.raises(RuntimeError, match=r"inside `with Flow\(...\)`, call the task"):
            fetch.submit(1)
        with pytest.raises(RuntimeError, match=r"\.delay\(\)"):
            fetch.delay(1)


def test_allow_failure_in_a_prefect_1_flow_names_the_trigger_to_use() -> None:
    from balancer import allow_failure

    with pytest.raises(FlowError, match=re.escape("give the task trigger=all_finished")), \
            Flow("f"):
        fetch(allow_failure(fetch(1)))


def test_allow_failure_in_wait_for_takes_futures_only() -> None:
    from balancer import allow_failure
    from balancer.dynamic import upstream_in

    with pytest.raises(TypeError, match=re.escape("allow_failure(...) in wait_for takes"
                                                  " futures (of .submit() or .map()), got int")):
        upstream_in("t", [allow_failure(3)], "wait_for")


def test_retry_jitter_factor_draws_each_task_s_delays_within_the_factor() -> None:
    """Prefect's retry_jitter_factor: the record holds the task's own list of delays, each
    within +-factor of the delay it jitters (doubling, or the given list's)."""
    from balancer.options import delay_field

    def drawn(field: float | str) -> list[float]:
        assert isinstance(field, str)
        return [float(x) for x in field.split(",")[:-1]]

    jittery = task(retries=3, retry_delay_seconds=10, retry_jitter_factor=0.5)(fetch.fn)
    assert jittery.retry_jitter_factor == 0.5
    draws = [drawn(delay_field(10.0, 3, 0.5)) for _ in range(50)]
    for delays in draws:
        assert len(delays) == 3
        assert all(d * 0.5 <= got <= d * 1.5 for d, got in zip((10, 20, 40), delays))
    assert len({tuple(d) for d in draws}) > 1  # drawn per task
    listed = drawn(delay_field((1.0, 100.0), 3, 0.1))
    assert 0.9 <= listed[0] <= 1.1 and all(90 <= d <= 110 for d in listed[1:])
    assert len(drawn(delay_field(1.0, 1000, 0.1))) == 50  # the last serves those past it
    assert delay_field(10.0, 3, None) == 10.0 and delay_field(10.0, 0, 0.5) == 10.0
    assert fetch.with_options(retry_jitter_factor=0.2).retry_jitter_factor == 0.2
    for bad in (-0.1, 11, float("nan"), "x"):
        with pytest.raises(ValueError, match="retry_jitter_factor must be"):
            task(retries=1, retry_jitter_factor=bad)(fetch.fn)


def test_prefect_2_task_metadata_is_kept_and_persist_result_taken() -> None:
    def documented(x: int) -> int:
        """Fetches x."""
        return x

    t = task(description=None, version="2", persist_result=False)(documented)
    assert (t.description, t.version, t.persist_result) == ("Fetches x.", "2", False)
    copy = t.with_options(description="other", persist_result=True)
    assert (copy.description, copy.persist_result, copy.version) == ("other", True, "2")


def test_a_flow_keeps_prefect_s_task_runners_but_refuses_a_sequential_one() -> None:
    from balancer import flow
    from balancer.task_runners import (
        ConcurrentTaskRunner,
        DaskTaskRunner,
        SequentialTaskRunner,
        ThreadPoolTaskRunner,
    )

    def body() -> None:
        return None

    for runner in (ThreadPoolTaskRunner(max_workers=8), ConcurrentTaskRunner(),
                   DaskTaskRunner(cluster_kwargs={"n_workers": 2})):
        assert flow(task_runner=runner)(body).options.task_runner is runner
    with pytest.raises(ValueError, match="chain them with wait_for"):
        flow(task_runner=SequentialTaskRunner())(body)
    with pytest.raises(ValueError, match="chain them with wait_for"):
        flow(body).with_options(task_runner=SequentialTaskRunner())


def _plain() -> None: ...

def test_a_flow_takes_prefect_s_validation_and_persistence_off_and_refuses_them_on() -> None:
    from balancer import flow

    kept = flow(validate_parameters=False, persist_result=False)(_plain)
    assert kept.name == "_plain"
    for option in ("validate_parameters", "persist_result"):
        with pytest.raises(ValueError, match=f"@flow\\({option}=True\\) is not supported"):
            flow(**{option: True})(_plain)


def test_a_parameter_as_an_upstream_task_passes_its_value_or_nothing() -> None:
    """Prefect 1's upstream_tasks=[param] and set_upstream(param, key=...): a parameter
    has no run to wait for; keyed, the task receives its value."""
    from balancer import Parameter

    extract, load = _tasks("extract", "load")
    with Flow("params") as flow:
        day = Parameter("day", default="mon")
        first = extract(upstream_tasks=[day])
        load.set_upstream(day, key="rows")
    assert set(flow.parameters) == {"day"}
    assert not first.upstream and flow.node_of(load).kwargs == {"rows": day}


@task
def _two(a: int, b: int = 2) -> int:
    return a + b


def test_a_call_its_task_cannot_take_is_refused_when_made_naming_the_task() -> None:
    """As Prefect binds a call to the function's signature: before, it was sent, and the
    worker's TypeError failed the run (after its retries)."""
    with Flow("typos") as flow:
        with pytest.raises(TypeError, match="task '_two': too many positional arguments"):
            _two(1, 2, 3)
        with pytest.raises(TypeError, match="task '_two': missing a required argument: 'a'"):
            _two(b=1)
        with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
            _two(1, c=3)
        with pytest.raises(TypeError, match="task '_two'"):
            _two.map([1, 2], [3, 4], [5, 6])
        first = _two(1)
        with pytest.raises(TypeError, match="task '_two': upstream_tasks takes a list of"
                                            " tasks, got Node"):
            _two(2, upstream_tasks=first)
        _two.map([1, 2], b=unmapped(3))
    assert len(flow.nodes) == 2


def test_a_map_waits_for_an_upstream_task_given_unmapped_in_upstream_tasks() -> None:
    """Prefect 1's ``t.map(xs, upstream_tasks=[unmapped(setup)])``."""
    setup, work = _tasks("setup", "work")
    with Flow("waits") as flow:
        ready = setup()
        mapped = work.map([1, 2, 3], upstream_tasks=[unmapped(ready)])
    assert mapped.upstream == {ready: None} and flow.upstream_tasks(mapped) == {ready}


def _fn_of(kinds: list[tuple[str, bool]]) -> Any:
    """A function whose parameters are of these kinds (with a default or not), in order."""
    kind = {"pos": inspect.Parameter.POSITIONAL_ONLY,
            "any": inspect.Parameter.POSITIONAL_OR_KEYWORD,
            "args": inspect.Parameter.VAR_POSITIONAL,
            "kw": inspect.Parameter.KEYWORD_ONLY, "kwargs": inspect.Parameter.VAR_KEYWORD}
    params = [inspect.Parameter(f"p{i}", kind[k], **(
        {"default": 0} if default and k in ("pos", "any", "kw") else {}))
              for i, (k, default) in enumerate(kinds)]

    def fn(*args: Any, **kwargs: Any) -> None:
        return None

    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return fn


@given(st.lists(st.tuples(st.sampled_from(["pos", "any", "args", "kw", "kwargs"]),
                          st.booleans()), max_size=5),
       st.integers(min_value=0, max_value=6))
def test_a_call_without_keywords_is_refused_exactly_when_binding_it_would_be(
        kinds: list[tuple[str, bool]], count: int) -> None:
    """``check_call`` decides such a call by its count alone (the usual call, spared the
    bind): the same verdict as ``Signature.bind``, for every shape of signature."""
    order = ["pos", "any", "args", "kw", "kwargs"]  # the order Python allows them in
    kinds = sorted(kinds, key=lambda k: order.index(k[0]))
    kinds = [k for i, k in enumerate(kinds) if k[0] not in ("args", "kwargs")
             or k[0] not in {x[0] for x in kinds[:i]}]
    positional = [i for i, (k, _) in enumerate(kinds) if k in ("pos", "any")]
    for after, i in enumerate(positional):  # a default only behind defaults
        if kinds[i][1] and any(not kinds[j][1] for j in positional[after + 1:]):
            kinds[i] = (kinds[i][0], False)
    try:
        fn = _fn_of(kinds)
    except ValueError:  # a shape Python refuses
        return
    t = task(fn, name="shaped")
    args = tuple(range(count))
    try:
        inspect.signature(fn).bind(*args)
        binds = True
    except TypeError:
        binds = False
    if binds:
        t.check_call(args, {})
    else:
        with pytest.raises(TypeError, match="task 'shaped'"):
            t.check_call(args, {})
