"""Bad input never crashes a process and never costs a good task."""

from __future__ import annotations

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, FlowError
from tests.conftest import wait_for
from tests.integration import tasks
from tests.integration.conftest import ThreadCluster


def _submit_with(cluster: ThreadCluster, field: str, value: bytes | str | None):  # type: ignore[no-untyped-def]
    """A flow of one bad task and one good one; the bad task's record is tampered with
    before the dispatcher can see it (the queue is paused meanwhile)."""
    keys = Keys(cluster.settings.namespace)
    cluster.client.hset(keys.queue_conf("default"), "paused", "1")
    with Flow("tampered") as flow:
        bad = tasks.constant(1)
        good = tasks.constant(2)
    run = flow.submit(cluster.client, namespace=cluster.settings.namespace)
    if value is None:
        cluster.client.hdel(keys.task(run.ids[bad]), field)
    else:
        cluster.client.hset(keys.task(run.ids[bad]), field, value)
    cluster.client.hset(keys.queue_conf("default"), "paused", "0")
    cluster.client.rpush(keys.wake, "q")
    return run, bad, good


@pytest.mark.parametrize(("field", "value", "error_type"), [
    ("args", b"\xc1\xff\x00", "balancer.BadPayload"),  # not msgpack at all
    ("args", b"\x92\x91", "balancer.BadPayload"),  # truncated
    ("args", b"\xa3abc", "balancer.BadPayload"),  # msgpack, but not [args, kwargs]
    ("fn", "tests.integration.nowhere:fn", "balancer.common.importpath.TaskNotFound"),
    ("fn", "tests.integration.tasks:nope", "balancer.common.importpath.TaskNotFound"),
    ("fn", "tests.integration.broken_module:fn", "balancer.common.importpath.TaskNotFound"),
    ("fn", "no-colon-here", "balancer.common.importpath.TaskNotFound"),
])
def test_a_corrupt_task_fails_with_a_clear_error_and_the_rest_runs(
    cluster: ThreadCluster, field: str, value: bytes, error_type: str
) -> None:
    cluster.add_worker(concurrency=2)
    run, bad, good = _submit_with(cluster, field, value)
    assert run.wait(timeout=20) == "failed"
    error = run.error(bad)
    assert error is not None and error.type == error_type, error
    assert run.result(good) == 2
    assert all(w.slots and all(s.is_alive() for s in w.slots) for w in cluster.workers)


def test_import_error_names_the_module_and_the_cause(cluster: ThreadCluster) -> None:
    cluster.add_worker()
    run, bad, _ = _submit_with(cluster, "fn", "tests.integration.broken_module:fn")
    run.wait(timeout=20)
    error = run.error(bad)
    assert error is not None
    assert "tests.integration.broken_module" in error.message
    assert "broken at import time" in error.message


@pytest.mark.parametrize("field", ["queue", "flow", "children", "score", "name"])
def test_a_task_record_missing_a_field_does_not_stop_the_cluster(
    cluster: ThreadCluster, field: str
) -> None:
    cluster.add_worker(concurrency=2)
    run, bad, good = _submit_with(cluster, field, None)
    wait_for(lambda: run.task_state(good) == "completed", timeout=20)
    assert run.result(good) == 2
    assert run.task_state(bad) in ("completed", "failed")
    assert cluster.thread.is_alive()


def test_a_queue_entry_without_a_task_record_is_dropped(cluster: ThreadCluster) -> None:
    keys = Keys(cluster.settings.namespace)
    cluster.add_worker()
    cluster.client.zadd(keys.queue("default"), {"no-such-task": 0})
    cluster.client.sadd(keys.queues, "default")
    cluster.client.rpush(keys.wake, "s")
    flow = Flow("after-garbage")
    node = flow.add_task(tasks.whoami)
    run = flow.submit(cluster.client, namespace=cluster.settings.namespace)
    assert run.wait(timeout=20) == "completed"
    assert isinstance(run.result(node), int)
    assert cluster.client.zcard(keys.queue("default")) == 0


def test_garbage_in_an_inbox_or_the_wake_list_is_skipped(cluster: ThreadCluster) -> None:
    keys = Keys(cluster.settings.namespace)
    worker = cluster.add_worker(name="garbage")
    cluster.client.rpush(keys.inbox("garbage"), b"\xff\xfe", b"no-attempt", b"x|notanumber")
    cluster.client.rpush(keys.wake, b"\x00\x01garbage", b"h|w|notanumber|x", b"zzz")
    flow = Flow("after-inbox-garbage")
    node = flow.add_task(tasks.whoami)
    run = flow.submit(cluster.client, namespace=cluster.settings.namespace)
    assert run.wait(timeout=20) == "completed"
    assert isinstance(run.result(node), int)
    assert all(s.is_alive() for s in worker.slots)
    assert cluster.thread.is_alive()


def test_cycles_and_foreign_references_are_refused_at_submit(real: redis.Redis,
                                                              namespace: str) -> None:
    flow = Flow("cyclic")
    a = flow.add_task(tasks.square)
    b = flow.add_task(tasks.multiply)
    a.set_upstream(b)
    b.set_upstream(a)
    with pytest.raises(FlowError, match="cycle"):
        flow.submit(real, namespace=namespace)
    with Flow("one") as one:
        ref = tasks.constant(1)
    with pytest.raises(FlowError, match="another flow"), Flow("two"):
        tasks.square(ref)
    assert not list(real.scan_iter(match="{" + namespace + "}:*"))
    assert one.nodes


def test_one_task_in_two_flows_runs_in_each(cluster: ThreadCluster) -> None:
    cluster.add_worker()
    first, second = Flow("first"), Flow("second")
    first.add_task(tasks.whoami)
    second.add_task(tasks.whoami)
    ns = cluster.settings.namespace
    r1 = first.submit(cluster.client, namespace=ns)
    r2 = second.submit(cluster.client, namespace=ns)
    assert r1.wait(timeout=20) == r2.wait(timeout=20) == "completed"
    assert r1.result(tasks.whoami) == r2.result(tasks.whoami)
