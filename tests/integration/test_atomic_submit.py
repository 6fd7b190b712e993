"""A submit is all or nothing, on the real Redis: one refused leaves no flow or task record
behind (a flow left half-written would show as running for ever in `balancer status`),
and one accepted is whole."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import pytest
import redis
from balancer.common.codec import MAX_DEPTH
from balancer.common.connection import connect
from balancer.common.keys import Keys

from balancer import Flow, FlowError, Queue, SubmitRefused, task
from bench.redis_servers import RedisServer
from tests.integration import tasks
from tests.integration.conftest import ThreadCluster
from tests.integration.topologies import need_redis_server


def records(client: redis.Redis, namespace: str) -> list[bytes]:
    """The flow and task keys of the namespace, and the recent flows listed."""
    prefix = Keys(namespace).prefix
    found = [*client.scan_iter(match=prefix + "flow:*"),
             *client.scan_iter(match=prefix + "task:*")]
    return found + [b"flows"] * client.zcard(Keys(namespace).flows)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def flow_of(node_task: Any, n: int, *args: Any) -> Flow:
    with Flow("refused") as flow:
        for _ in range(n):
            node_task(*args)
    return flow


def changed(option: str, value: Any) -> Any:
    """``tasks.constant`` under another name, an option set after decoration."""
    made = task(name="changed")(tasks.constant.fn)
    setattr(made, option, value)
    return made


@pytest.mark.parametrize("n", [1, 40], ids=["small-submit", "large-submit"])
@pytest.mark.parametrize(("make", "error"), [
    (lambda n: flow_of(changed("priority", math.nan), n, 1), "priority"),
    (lambda n: flow_of(changed("timeout", math.nan), n, 1), "timeout"),
    (lambda n: flow_of(changed("retries", 1.5), n, 1), "retries"),
    (lambda n: flow_of(tasks.constant, n, b"x" * (2 << 20)), "over the limit"),
    (lambda n: flow_of(tasks.constant, n, object()), "cannot be sent"),
], ids=["nan-priority", "nan-timeout", "float-retries", "payload", "codec"])
def test_a_submit_refused_at_the_client_leaves_no_key_in_redis(
        real: redis.Redis, namespace: str, n: int, make: Any, error: str) -> None:
    flow = make(n)
    with pytest.raises(FlowError, match=error):
        flow.submit(real, namespace=namespace)
    assert not list(real.scan_iter(match=Keys(namespace).prefix + "*"))


def test_an_argument_nested_past_the_limit_after_its_call_leaves_no_key_in_redis(
        real: redis.Redis, namespace: str) -> None:
    rows: list[Any] = []
    with Flow("grown") as flow:
        tasks.constant(rows)
        tasks.constant(2)
    rows.append(nested(700))
    with pytest.raises(FlowError, match="argument at position 0 is nested deeper"):
        flow.submit(real, namespace=namespace)
    assert not list(real.scan_iter(match=Keys(namespace).prefix + "*"))


@pytest.mark.parametrize("n", [1, 40], ids=["small-submit", "large-submit"])
def test_a_write_redis_refuses_midway_is_undone(real: redis.Redis, namespace: str,
                                                 n: int) -> None:
    """Neither MULTI/EXEC nor a script rolls back when a command fails: the records
    written before it stay unless the submit removes them. A queue key of the wrong type
    makes the queueing fail after the records were written."""
    keys = Keys(namespace)
    real.set(keys.queue("default"), "not a sorted set")
    with pytest.raises(FlowError, match="Redis refused a write") as refused:
        flow_of(tasks.constant, n, 1).submit(real, namespace=namespace)
    assert records(real, namespace) == []
    assert f"{keys.queue('default')} holds a string, not a zset" in str(refused.value)


@pytest.mark.parametrize("n", [1, 40], ids=["small-submit", "large-submit"])
def test_a_submit_redis_cannot_take_for_now_is_a_redis_error_too_and_leaves_nothing(
        namespace: str, n: int, caplog: pytest.LogCaptureFixture) -> None:
    """Redis out of memory refuses the submit whatever the flow: the error is a FlowError
    (as before) and a redis-py error reply, so that code that waits out Redis's troubles
    (``except redis.RedisError``) retries it, as it retries a lost connection. Its undo
    goes through while Redis is still full: it logged "could not undo a refused submit
    (its records may remain)", Redis refusing every command queued in a transaction then."""
    need_redis_server()
    server = RedisServer().start()
    try:
        client = connect(server.url)
        client.config_set("maxmemory", "1")  # every write is refused with OOM
        said = r"used memory > 'maxmemory'.* submit it again later"
        with pytest.raises(SubmitRefused, match=said) as refused:
            flow_of(tasks.constant, n, 1).submit(client, namespace=namespace)
        assert isinstance(refused.value, FlowError)
        assert isinstance(refused.value, redis.RedisError)
        assert "could not undo" not in caplog.text and "undoing" not in caplog.text
        assert records(client, namespace) == []
        client.config_set("maxmemory", "0")
        assert records(client, namespace) == []
        run = flow_of(tasks.constant, n, 1).submit(client, namespace=namespace)
        assert run.state == "running"  # taken once Redis can
    finally:
        server.stop()


def test_an_undone_submit_takes_its_tasks_back_out_of_the_queues_it_reached(
        real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    real.set(keys.queue("broken"), "not a sorted set")
    flow = Flow("two-queues")
    flow.add_task(tasks.constant, queue=Queue("broken"))
    flow.add_task(tasks.square, queue=Queue("fine", priority=2))
    with pytest.raises(FlowError, match="WRONGTYPE"):
        flow.submit(real, namespace=namespace)
    assert records(real, namespace) == []
    assert real.zcard(keys.queue("fine")) == 0


def test_a_chain_of_5000_tasks_is_submitted_whole_with_its_head_queued(
        real: redis.Redis, namespace: str) -> None:
    flow = Flow("chain")
    nodes = [flow.call(tasks.constant, (i,), {}) for i in range(5000)]
    for down, up in pairwise(nodes):
        down.set_upstream(up)  # built from its end: a recursive walk would go 5000 deep
    run = flow.submit(real, namespace=namespace)
    keys = Keys(namespace)
    assert real.zrange(keys.queue("default"), 0, -1) == [run.ids[nodes[-1]].encode()]
    assert len(records(real, namespace)) == 1 + 5000 + 1


def test_an_argument_nested_to_the_limit_runs_with_its_upstream_result_inside(
        cluster: ThreadCluster) -> None:
    """The worker walks the arguments to put upstream results in: at the deepest nesting
    the client lets through, it must not hit the recursion limit either."""
    cluster.add_worker()
    with Flow("deep-argument") as flow:
        head = tasks.constant(7)
        value: Any = head
        for _ in range(MAX_DEPTH):
            value = [value]
        deep = tasks.constant(value)
    run = flow.submit(cluster.client, namespace=cluster.settings.namespace)
    assert run.wait(timeout=30) == "completed", run.error(deep)
    result = run.result(deep)
    for _ in range(MAX_DEPTH):
        (result,) = result
    assert result == 7
