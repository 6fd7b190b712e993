"""BALANCER_MIN_REPLICAS on a Redis with no replica: a submit that no replica confirmed is
an error that says so (its flow stands on the master), and a worker whose acknowledgements
no replica confirms says so once and goes on. Real Redis, real processes."""

from __future__ import annotations

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, NotReplicated
from tests.conftest import Processes, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration


def _no_replica(client: redis.Redis) -> None:
    if int(client.info("replication")["connected_slaves"]) > 0:
        pytest.skip("this test needs a Redis without replicas")


@pytest.mark.parametrize("width", [1, 40], ids=["small-submit", "large-submit"])
def test_a_submit_no_replica_confirmed_raises_not_replicated_and_the_flow_stands(
        real: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch,
        width: int) -> None:
    _no_replica(real)
    monkeypatch.setenv("BALANCER_MIN_REPLICAS", "1")
    monkeypatch.setenv("BALANCER_REPLICA_TIMEOUT", "0.05")
    with Flow("durable") as flow:
        for i in range(width):
            tasks.constant(i)
    with pytest.raises(NotReplicated, match=r"0 of the 1 replicas .* within 50 ms") as caught:
        flow.submit(real, namespace=namespace)
    flows = real.zrange(Keys(namespace).flows, 0, -1)
    assert len(flows) == 1 and flows[0].decode() in str(caught.value)


def test_a_worker_whose_acknowledgements_no_replica_confirms_says_so_once_and_goes_on(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    _no_replica(real)
    procs.env.update(BALANCER_MIN_REPLICAS="1", BALANCER_REPLICA_TIMEOUT="0.05")
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "thread")
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 1, timeout=30)
    with Flow("acks") as flow:
        total = tasks.total([tasks.square(i) for i in range(5)])
    run = flow.submit(real, namespace=namespace)  # this process asks for no replica
    assert run.wait(timeout=60) == "completed" and run.result(total) == 30
    procs.stop(worker)
    log = procs.log(worker)
    assert log.count("confirmed by 0 of 1 replicas") == 1, log


def test_a_flow_function_whose_run_no_replica_confirmed_raises_not_replicated(
        real: redis.Redis, redis_url: str, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A @flow function's open run is a submit too: opening it waits for the replicas."""
    from balancer import flow

    _no_replica(real)
    monkeypatch.setenv("BALANCER_MIN_REPLICAS", "1")
    monkeypatch.setenv("BALANCER_REPLICA_TIMEOUT", "0.05")

    @flow(redis_url=redis_url, namespace=namespace)
    def durable_function() -> int:
        return 1

    with pytest.raises(NotReplicated, match="0 of the 1 replicas"):
        durable_function()
    (run_id,) = real.zrange(Keys(namespace).flows, 0, -1)
    assert real.hget(Keys(namespace).flow(run_id.decode()), "state") == b"failed"  # not open
