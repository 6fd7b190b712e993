"""Flow semantics on a real Redis with the real dispatcher and workers (as threads)."""

from __future__ import annotations

import pytest
import redis

from balancer import Flow, TaskFailed
from tests.conftest import Processes
from tests.integration import tasks
from tests.integration.conftest import ThreadCluster


def test_diamond_dag_passes_upstream_results_as_arguments(cluster: ThreadCluster) -> None:
    cluster.add_worker(concurrency=2)
    cluster.add_worker(concurrency=2)
    with Flow("diamond") as flow:
        top = tasks.constant(3)
        left = tasks.multiply(top, b=10)
        right = tasks.square(top)
        bottom = tasks.add(left, right)
    run = flow.submit(cluster.client, namespace=cluster.settings.namespace)
    assert run.wait(timeout=20) == "completed"
    assert run.result(top) == 3
    assert run.result(left) == 30
    assert run.result(right) == 9
    assert run.result(bottom) == 39


def test_results_nested_in_lists_reach_the_downstream_task(cluster: ThreadCluster) -> None:
    cluster.add_worker(concurrency=4)
    with Flow("fan-in") as flow:
        parts = [tasks.square(i) for i in range(6)]
        summed = tasks.total(parts)
    run = flow.run(timeout=20, client=cluster.client, namespace=cluster.settings.namespace)
    assert run.is_successful()
    assert run.result(summed) == sum(i * i for i in range(6))


def test_failing_task_retries_then_fails_and_dependents_end_upstream_failed(
    cluster: ThreadCluster,
) -> None:
    cluster.add_worker(concurrency=2)
    with Flow("failing") as flow:
        bad = tasks.always_fails(7)
        child = tasks.square(bad)
        grandchild = tasks.add(child, 1)
        unrelated = tasks.constant(5)
    run = flow.run(timeout=20, client=cluster.client, namespace=cluster.settings.namespace)
    assert run.state == "failed"
    failures = cluster.client.hget(cluster.dispatcher.keys.task(run.ids[bad]), "failures")
    assert int(failures) == 3  # the first try and 2 retries
    with pytest.raises(TaskFailed) as caught:
        run.result(bad)
    error = caught.value.error
    assert error is not None
    assert error.type == "ValueError"
    assert error.message == "bad input 7"
    assert "always_fails" in error.traceback and "Traceback" in error.traceback
    assert run.task_state(child) == "upstream_failed"
    assert run.task_state(grandchild) == "upstream_failed"
    assert run.result(unrelated) == 5


def test_unstorable_result_fails_the_task_with_a_clear_error_without_retrying(
    cluster: ThreadCluster,
) -> None:
    cluster.add_worker()
    flow = Flow("bad-result")
    node = flow.add_task(tasks.returns_a_complex)
    run = flow.run(timeout=20, client=cluster.client, namespace=cluster.settings.namespace)
    assert run.state == "failed"
    error = run.error(node)
    assert error is not None and error.type == "balancer.ResultNotSerializable"
    assert "complex" in error.message


def test_task_timeout_fails_the_task(cluster: ThreadCluster) -> None:
    cluster.add_worker()
    flow = Flow("timeout")
    node = flow.add_task(tasks.hangs)
    run = flow.run(timeout=20, client=cluster.client, namespace=cluster.settings.namespace)
    assert run.state == "failed"
    error = run.error(node)
    assert error is not None and error.type == "TimeoutError"


def test_empty_flow_completes_at_once(cluster: ThreadCluster) -> None:
    run = Flow("empty").run(timeout=5, client=cluster.client,
                            namespace=cluster.settings.namespace)
    assert run.state == "completed"


def test_imperative_upstream_keyword_passes_the_result(cluster: ThreadCluster) -> None:
    cluster.add_worker()
    flow = Flow("keyed")
    flow.add_task(tasks.constant)
    first = flow.nodes[0]
    first.args = (4,)
    second = flow.add_task(tasks.multiply)
    second.kwargs = {"b": 3}
    second.set_upstream(first, key="a")
    run = flow.run(timeout=20, client=cluster.client, namespace=cluster.settings.namespace)
    assert run.result(tasks.multiply) == 12


def test_results_and_states_of_a_whole_run_are_read_at_once(cluster: ThreadCluster) -> None:
    cluster.add_worker(concurrency=2)
    with Flow("all") as flow:
        first = tasks.constant(2)
        tasks.square(first)
        tasks.always_fails(1)
    run = flow.run(timeout=20, client=cluster.client, namespace=cluster.settings.namespace)
    assert run.results() == {"constant": 2, "square": 4}
    assert run.states() == {"constant": "completed", "square": "completed",
                            "always_fails": "failed"}


def test_results_and_states_keep_repeated_calls_of_a_task_apart(cluster: ThreadCluster) -> None:
    cluster.add_worker(concurrency=2)
    with Flow("repeated") as flow:
        for i in range(5):
            tasks.square(i)
    run = flow.run(timeout=20, client=cluster.client, namespace=cluster.settings.namespace)
    assert run.results() == {"square": 0, "square#2": 1, "square#3": 4, "square#4": 9,
                             "square#5": 16}
    assert set(run.states()) == {"square", "square#2", "square#3", "square#4", "square#5"}


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_task_submits_another_task_and_waits_for_it(
        pool: str, procs: Processes, real: redis.Redis, namespace: str) -> None:
    """Code in a pool process reads its settings as anywhere (the worker's marker in its
    environment made every client call there fail with an unknown BALANCER_ setting)."""
    procs.serve_and_worker(real, namespace, "--concurrency", "2", "--pool", pool)
    with Flow("nested") as f:
        outer = tasks.square_elsewhere(7)
    run = f.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.state == "completed", run.first_failure()
    assert run.result(outer) == 49
