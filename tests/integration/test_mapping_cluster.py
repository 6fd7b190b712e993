"""Mapping at scale on real processes: 10,000 children on `balancer serve` and two
`worker start` processes, with the dispatcher killed while it expands the map."""

from __future__ import annotations

import signal

import redis
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import Processes, wait_for
from tests.integration import tasks
from tests.integration.conftest import ThreadCluster

N = 10_000


def test_a_map_of_10000_children_survives_its_dispatcher_killed_mid_expansion(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    dispatcher = procs.serve()
    procs.worker("--queue", "default", "--concurrency", "4")
    procs.worker("--queue", "default", "--concurrency", "4", "--pool", "thread")
    wait_for(lambda: real.zcard(keys.workers) >= 2, timeout=30)
    with Flow("ten-thousand") as flow:
        mapped = tasks.double.map(tasks.numbers(N))
        summed = tasks.total(mapped)
    run = flow.submit(real, namespace=namespace)
    map_id = run.ids[mapped]
    # Kill the dispatcher as soon as it starts writing the children (or later: whenever
    # it dies, nothing may be lost or expanded twice).
    wait_for(lambda: real.exists(keys.task(f"{map_id}-0000")) or run.is_finished(),
             timeout=60, interval=0.005)
    procs.stop(dispatcher, signal.SIGKILL)
    procs.serve()  # a new dispatcher takes over once the old lease lapses
    assert run.wait(timeout=300) == "completed", run.first_failure()
    assert run.result(mapped) == [2 * i for i in range(N)]
    assert run.result(summed) == N * (N - 1)
    assert real.hmget(keys.flow(run.id), ["total", "remaining", "failed"]) == [
        str(N + 3).encode(), b"0", b"0"]
    assert real.hget(keys.task(map_id), "mapped") == str(N).encode()


def test_an_upstream_list_too_long_to_map_fails_the_map_and_writes_no_child(
        cluster: ThreadCluster) -> None:
    """A list within the result size limit but past max_map_children (100,000 by
    default): the map fails with a MapError naming the limit; nothing else is run."""
    cluster.add_worker()
    with Flow("too-many") as flow:
        mapped = tasks.double.map(tasks.zeros(200_000))
        after = tasks.total(mapped)
    run = flow.run(timeout=60, client=cluster.client, namespace=cluster.settings.namespace,
                   quiet=True)
    assert run.is_failed()
    error = run.error(mapped)
    assert error is not None and error.type == "balancer.MapError"
    assert "mapping over 200000 items, more than the limit of 100000" in error.message
    assert run.task_state(after) == "upstream_failed"
    keys = Keys(cluster.settings.namespace)
    assert not cluster.client.exists(keys.task(f"{run.ids[mapped]}-000000"))


def test_an_upstream_result_too_large_to_store_fails_before_any_map(
        cluster: ThreadCluster) -> None:
    """A list of a billion items cannot even be stored: results are capped at
    max_payload_bytes, so the upstream fails with ResultTooLarge (here with 2 million
    items, 2 MiB) and the map never expands."""
    cluster.add_worker()
    with Flow("too-large") as flow:
        source = tasks.zeros(2 * 1024 * 1024)
        mapped = tasks.double.map(source)
    run = flow.run(timeout=60, client=cluster.client, namespace=cluster.settings.namespace,
                   quiet=True)
    source_error = run.error(source)
    assert source_error is not None and source_error.type == "balancer.ResultTooLarge"
    assert run.task_state(mapped) == "upstream_failed"
