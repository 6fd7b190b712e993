"""Prefect 1 code runs with only the import changed: upstream_tasks=, set_dependencies,
add_edge, chain, Flow(tasks=, edges=), Parameter, max_retries with a timedelta, and the
state that flow.run() returns. On a real Redis with real worker threads."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis

from balancer import Flow, FlowError, Parameter, task
from balancer.control_flow import FilterTask
from tests.integration import tasks
from tests.integration.conftest import ThreadCluster


def _run(cluster: ThreadCluster, flow: Flow, **kwargs: object):  # type: ignore[no-untyped-def]
    return flow.run(timeout=30, client=cluster.client, namespace=cluster.settings.namespace,
                    quiet=True, **kwargs)  # type: ignore[arg-type]


def _order(client: redis.Redis, key: str) -> list[str]:
    return [x.decode() for x in client.lrange(key, 0, -1)]


def test_upstream_tasks_run_first_without_passing_anything(
        cluster: ThreadCluster, redis_url: str, namespace: str) -> None:
    cluster.add_worker(concurrency=4)
    key = f"{{{namespace}}}:order"
    with Flow("upstream_tasks") as flow:
        first = tasks.record(redis_url, key, "first")
        second = tasks.record(redis_url, key, "second", upstream_tasks=[first])
        tasks.record(redis_url, key, "third", upstream_tasks=[second, first])
    run = _run(cluster, flow)
    assert run.is_successful() and not run.is_failed()
    assert _order(cluster.client, key) == ["first", "second", "third"]
    assert second.upstream == {first: None}  # order only: no result is passed


def test_set_dependencies_add_edge_and_chain_wire_a_flow_imperatively(
        cluster: ThreadCluster, redis_url: str, namespace: str) -> None:
    cluster.add_worker(concurrency=4)
    key = f"{{{namespace}}}:order"
    flow = Flow("imperative")
    one, two = flow.add_task(tasks.constant), flow.add_task(tasks.square)
    one.args, two.args = (3,), ()
    flow.set_dependencies(tasks.square, keyword_tasks={"x": tasks.constant})
    total = flow.add_task(tasks.add)
    flow.add_edge(tasks.square, total, key="a")
    flow.set_dependencies(total, keyword_tasks={"b": 100})
    with flow:
        a, b, c = (tasks.record(redis_url, key, label) for label in "abc")
    flow.chain(c, b, a)
    run = _run(cluster, flow)
    assert run.result(total) == 109  # 3 * 3 + 100
    assert _order(cluster.client, key) == ["c", "b", "a"]


def test_a_flow_built_from_tasks_and_edges(cluster: ThreadCluster) -> None:
    cluster.add_worker()
    flow = Flow("edges", tasks=[tasks.constant, tasks.square],
                edges=[(tasks.constant, tasks.square, "x")])
    flow.node_of(tasks.constant).args = (7,)
    run = _run(cluster, flow)
    assert run.result[tasks.square].result == 49


def test_parameters_take_their_defaults_or_the_values_given_to_run(
        cluster: ThreadCluster) -> None:
    cluster.add_worker()
    with Flow("params") as flow:
        x = Parameter("x", default=2)
        y = Parameter("y")  # no default: required
        result = tasks.add(tasks.square(x), y)
    assert _run(cluster, flow, parameters={"y": 10}).result(result) == 14
    assert _run(cluster, flow, parameters={"x": 5, "y": 1}).result(result) == 26
    with pytest.raises(FlowError, match="parameter 'y' is required"):
        flow.submit(cluster.client, namespace=cluster.settings.namespace)
    with pytest.raises(FlowError, match="has no parameter z"):
        flow.submit(cluster.client, namespace=cluster.settings.namespace,
                    parameters={"y": 1, "z": 3})


@task(max_retries=2, retry_delay=timedelta(milliseconds=50))
def flaky_once(url: str, key: str) -> str:
    if redis.Redis.from_url(url).incr(key) < 2:
        raise RuntimeError("first try fails")
    return "ok"


def test_max_retries_and_a_timedelta_retry_delay(cluster: ThreadCluster, redis_url: str,
                                                 namespace: str) -> None:
    assert flaky_once.retries == 2 and flaky_once.retry_delay == 0.05
    cluster.add_worker()
    with Flow("retries") as flow:
        node = flaky_once(redis_url, f"{{{namespace}}}:tries")
    assert _run(cluster, flow).result(node) == "ok"


@task(retries=2, retry_delay_seconds=[0.3, 0.6])
def flaky_twice(url: str, key: str) -> str:
    """Records when each run starts; the first two fail."""
    client = redis.Redis.from_url(url)
    client.rpush(key, repr(time.time()))
    if client.llen(key) < 3:
        raise RuntimeError("the first two runs fail")
    return "ok"


def test_a_list_of_retry_delays_waits_each_before_its_retry(
        cluster: ThreadCluster, redis_url: str, namespace: str) -> None:
    """Prefect 2/3's retry_delay_seconds=[...]: retry n waits the n-th delay. Only lower
    bounds are asserted (a slow machine only waits longer); fail.lua's tests show the
    exact waits, and that they do not double."""
    cluster.add_worker()
    key = f"{{{namespace}}}:starts"
    with Flow("listed-delays") as flow:
        node = flaky_twice(redis_url, key)
    run = _run(cluster, flow)
    assert run.result(node) == "ok"
    starts = [float(x) for x in _order(cluster.client, key)]
    assert len(starts) == 3
    slack = 0.01  # Redis counts the wait from its clock, in whole ms
    assert starts[1] - starts[0] >= 0.3 - slack and starts[2] - starts[1] >= 0.6 - slack, starts


jittery_twice = flaky_twice.with_options(retry_delay_seconds=0.2, retry_jitter_factor=0.5)


def test_a_jittered_retry_delay_is_drawn_per_task_and_waited(
        cluster: ThreadCluster, redis_url: str, namespace: str) -> None:
    """retry_jitter_factor=0.5 on a 0.2 s doubling delay: the task's record holds its own
    drawn delays, within 0.1-0.3 s and 0.2-0.6 s, and each is waited (lower bounds only)."""
    cluster.add_worker()
    key = f"{{{namespace}}}:jittered"
    with Flow("jittered") as flow:
        node = jittery_twice(redis_url, key)
    run = flow.submit(cluster.client, namespace=cluster.settings.namespace)
    assert run.wait(timeout=30) == "completed" and run.result(node) == "ok"
    field = cluster.client.hget(run.keys.task(run.ids[node]), "retry_delay")
    delays = [float(x) for x in (field or b"").decode().split(",")[:-1]]
    assert len(delays) == 2 and 0.1 <= delays[0] <= 0.3 and 0.2 <= delays[1] <= 0.6, delays
    starts = [float(x) for x in _order(cluster.client, key)]
    slack = 0.01  # Redis counts the wait from its clock, in whole ms
    assert starts[1] - starts[0] >= delays[0] - slack, starts
    assert starts[2] - starts[1] >= delays[1] - slack, starts


def test_the_run_reads_as_prefects_state(cluster: ThreadCluster) -> None:
    cluster.add_worker(concurrency=2)
    with Flow("state") as flow:
        good = tasks.constant(1)
        bad = tasks.always_fails(2)
        after = tasks.square(bad)
    state = _run(cluster, flow)
    assert state.is_failed() and not state.is_successful()
    assert "Some tasks failed" in state.message and "always_fails" in state.message
    assert state.result[good].result == 1 and state.result[good].is_successful()
    assert state.result[bad].is_failed() and "bad input 2" in state.result[bad].message
    assert state.result[after].is_failed() and state.result[after].result is None


def test_a_copy_made_with_options_runs_with_its_own_options(cluster: ThreadCluster) -> None:
    """Prefect 2/3's task.with_options: the copy's retries and name travel with its call;
    the worker runs the same function."""
    cluster.add_worker(concurrency=2)
    no_retry = tasks.run_facts.with_options(name="facts-once", retries=0)
    with Flow("copies") as flow:
        original = tasks.run_facts(fail_first=True)
        once = no_retry(fail_first=True)
    run = _run(cluster, flow)
    assert run.result[original].is_successful()
    assert run.result[original].result["task_name"] == "run_facts"
    assert run.result[once].is_failed() and "the first run fails" in run.result[once].message


def test_prefect_1_run_options_of_its_local_runner_are_taken(cluster: ThreadCluster) -> None:
    """flow.run(run_on_schedule=False, executor=LocalDaskExecutor(), return_tasks=[...]),
    as Prefect 1 scripts call it, runs the flow once on the cluster."""
    cluster.add_worker(concurrency=2)
    from balancer.executors import LocalDaskExecutor

    with Flow("local-runner-options", executor=LocalDaskExecutor(scheduler="threads")) as flow:
        seven = tasks.add(tasks.constant(3), 4)
    run = _run(cluster, flow, run_on_schedule=False, executor=LocalDaskExecutor(),
               return_tasks=[seven])
    assert run.is_successful() and run.result[seven].result == 7


@pytest.mark.usefixtures("no_graphviz")
def test_a_flows_graph_is_read_as_prefect_1s_and_drawn_with_the_states_of_its_run(
        cluster: ThreadCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """sorted_tasks, edges, root and terminal tasks, then visualize(flow_state=...) of the
    run that flow.run() returned (graphviz absent: the text drawing)."""
    cluster.add_worker(concurrency=2)
    with Flow("inspected") as flow:
        a = tasks.constant(2)
        b = tasks.multiply(a, b=5)
        bad = tasks.always_fails(b)
    assert [t.name for t in flow.sorted_tasks()] == ["constant", "multiply", "always_fails"]
    assert {(e.upstream_task.name, e.downstream_task.name, e.key) for e in flow.edges} == {
        ("constant", "multiply", "a"), ("multiply", "always_fails", "x")}
    assert flow.root_tasks() == {a} and flow.terminal_tasks() == {bad}
    run = _run(cluster, flow)
    capsys.readouterr()
    assert flow.visualize(flow_state=run).splitlines()[1:] == [
        "  constant [default]: completed",
        "  multiply [default]: completed <- constant (as a)",
        "  always_fails [default]: failed <- multiply (as x)",
    ]



def test_tasks_bound_imperatively_run_with_their_arguments(cluster: ThreadCluster) -> None:
    """Prefect 1's imperative API: t.bind(...) and t.set_dependencies(flow, ...), a list
    of tasks as an argument, and a mapped bind."""
    cluster.add_worker(concurrency=2)
    flow = Flow("bound")
    two = tasks.constant.copy(name="two").bind(2, flow=flow)
    ten = tasks.multiply.copy(name="ten")
    flow.add_task(ten)  # added first: bind gives this call its arguments, no second call
    ten.bind(a=two, b=5, flow=flow)
    summed = tasks.total.copy(name="summed").bind([two, ten], flow=flow)
    squares = tasks.square.copy(name="squares").bind(x=two, flow=flow, upstream_tasks=[ten])
    mapped = tasks.square.copy(name="mapped").bind(x=[1, 2, 3], flow=flow, mapped=True)
    after = tasks.constant.copy(name="after")
    after.set_dependencies(flow, upstream_tasks=[summed], keyword_tasks={"value": 7})
    assert len(flow.tasks) == 6
    run = _run(cluster, flow)
    assert run.is_successful()
    assert [run.result[t].result for t in (two, ten, summed, squares, mapped, after)] == [
        2, 10, 12, 4, [1, 4, 9], 7]


def test_filter_task_drops_a_maps_failed_runs_and_a_subclass_filters_its_own_way(
        cluster: ThreadCluster) -> None:
    cluster.add_worker(concurrency=2)
    with Flow("filtered") as flow:
        mapped = tasks.fails_on_three.map([1, 2, 3, 4])
        kept = FilterTask()(mapped)
        even = tasks.KeepEven(name="even")(mapped)
        summed = tasks.total(kept)
    run = _run(cluster, flow)
    assert run.result[mapped].is_failed()
    assert run.result[kept].result == [1, 2, 4] and run.result[even].result == [2, 4]
    assert run.result[summed].result == 7
    with pytest.raises(TypeError, match="method of a subclass"):
        FilterTask(filter_func=lambda item: item is not None)


def test_a_mapped_tasks_result_lists_the_state_of_each_of_its_runs(
        cluster: ThreadCluster) -> None:
    """Prefect 1's state.result[mapped].map_states: each run's outcome, in item order."""
    cluster.add_worker(concurrency=2)
    with Flow("map-states") as flow:
        mapped = tasks.fails_on_three.map([1, 2, 3, 4])
        plain = tasks.constant(1)
    run = _run(cluster, flow)
    runs = run.result[mapped].map_states
    assert [(r.state, r.result) for r in runs] == [
        ("completed", 1), ("completed", 2), ("failed", None), ("completed", 4)]
    assert runs[2].is_failed() and "ValueError: three" in runs[2].message
    assert run.result[plain].map_states == []
