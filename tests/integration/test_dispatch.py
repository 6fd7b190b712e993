"""Which worker gets which task, on a real Redis with the real dispatcher.

The workers here are simulated: they heartbeat like real ones (through the same script)
with the load a test chooses, and never run anything, so where each task lands can be read
from their inboxes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis
from balancer.common import signals
from balancer.common.aside import Aside
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.scripts import Scripts
from click.testing import CliRunner

from balancer import Flow
from balancer.cli import main as balancer_cli
from tests.conftest import wait_for
from tests.integration import tasks
from tests.integration.conftest import ThreadCluster


class SimulatedWorker(threading.Thread):
    def __init__(self, client: redis.Redis, keys: Keys, worker_id: str, queues: tuple[str, ...],
                 capacity: int, cpu: float) -> None:
        super().__init__(daemon=True)
        self.scripts = Scripts(client, keys)
        self.client = client
        self.keys = keys
        self.info = WorkerInfo(worker_id, queues, capacity, cpu=cpu, pressure=cpu)
        self.stopping = threading.Event()
        self.scripts.heartbeat(worker_id, self.info.to_blob(), 1000)

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            self.scripts.heartbeat(self.info.id, self.info.to_blob(), 1000)

    def inbox(self) -> list[str]:
        entries = self.client.lrange(self.keys.inbox(self.info.id), 0, -1)
        return [lease.task_id for lease in map(signals.parse_lease, entries) if lease]


@pytest.fixture
def simulate(cluster: ThreadCluster) -> Iterator:  # type: ignore[type-arg]
    started: list[SimulatedWorker] = []

    def make(worker_id: str, queues: tuple[str, ...] = ("default",), capacity: int = 10,
             cpu: float = 0.0) -> SimulatedWorker:
        w = SimulatedWorker(cluster.client, cluster.dispatcher.keys, worker_id, queues,
                            capacity, cpu)
        w.start()
        started.append(w)
        return w

    yield make
    for w in started:
        w.stopping.set()
        w.join(2)


def _submit(cluster: ThreadCluster, n: int, task=tasks.constant) -> Flow:  # type: ignore[no-untyped-def]
    with Flow("batch") as flow:
        for i in range(n):
            task(i)
    flow.submit(cluster.client, namespace=cluster.settings.namespace)
    return flow


def _registered(cluster: ThreadCluster, *ids: str) -> None:
    wait_for(lambda: all(i in cluster.dispatcher.view.workers for i in ids))


def test_tasks_go_to_the_worker_reporting_less_load(cluster: ThreadCluster, simulate) -> None:  # type: ignore[no-untyped-def]
    idle = simulate("idle", cpu=0.0)
    busy = simulate("busy", cpu=0.95)
    _registered(cluster, "idle", "busy")
    _submit(cluster, 4)
    wait_for(lambda: len(idle.inbox()) + len(busy.inbox()) == 4)
    assert len(idle.inbox()) == 4
    assert busy.inbox() == []


def test_a_batch_is_spread_over_equally_loaded_workers(cluster: ThreadCluster, simulate) -> None:  # type: ignore[no-untyped-def]
    a = simulate("a")
    b = simulate("b")
    _registered(cluster, "a", "b")
    _submit(cluster, 12)
    wait_for(lambda: len(a.inbox()) + len(b.inbox()) == 12)
    assert abs(len(a.inbox()) - len(b.inbox())) <= 2


def test_only_free_slots_are_filled(cluster: ThreadCluster, simulate) -> None:  # type: ignore[no-untyped-def]
    small = simulate("small", capacity=2)
    _registered(cluster, "small")
    _submit(cluster, 5)
    wait_for(lambda: len(small.inbox()) == 2)
    big = simulate("big", capacity=10)
    wait_for(lambda: len(big.inbox()) == 3)
    assert len(small.inbox()) == 2


def test_a_worker_never_gets_tasks_of_a_queue_it_does_not_serve(
    cluster: ThreadCluster, simulate  # type: ignore[no-untyped-def]
) -> None:
    other = simulate("other", queues=("reports",))
    mine = simulate("mine", queues=("default",), capacity=3)
    _registered(cluster, "other", "mine")
    _submit(cluster, 6)
    wait_for(lambda: len(mine.inbox()) == 3)
    assert other.inbox() == []
    queued = cluster.client.zcard(cluster.dispatcher.keys.queue("default"))
    assert queued == 3


def test_high_priority_queue_runs_before_low_priority_when_both_are_ready(
    cluster: ThreadCluster, redis_url: str
) -> None:
    ns = cluster.settings.namespace
    for name, priority in (("high", "10"), ("low", "1")):
        result = CliRunner().invoke(balancer_cli, ["queue", "set", name, "--priority", priority,
                                                   "--redis-url", redis_url, "--namespace", ns])
        assert result.exit_code == 0, result.output
    order_key = f"order-{ns}"
    with Flow("priorities") as flow:
        for i in range(4):
            tasks.record_low(redis_url, order_key, f"low{i}")
        for i in range(4):
            tasks.record_high(redis_url, order_key, f"high{i}")
    flow.submit(cluster.client, namespace=ns)  # all 8 ready before any worker exists
    cluster.add_worker(queues=("high", "low"), concurrency=1)
    wait_for(lambda: cluster.client.llen(order_key) == 8, timeout=20)
    order = [x.decode() for x in cluster.client.lrange(order_key, 0, -1)]
    cluster.client.delete(order_key)
    assert order == [f"high{i}" for i in range(4)] + [f"low{i}" for i in range(4)]


def _queue_cli(redis_url: str, ns: str, *args: str) -> None:
    result = CliRunner().invoke(balancer_cli, ["queue", *args, "--redis-url", redis_url,
                                               "--namespace", ns])
    assert result.exit_code == 0, result.output


def test_queue_concurrency_limit_caps_tasks_leased_across_workers(
    cluster: ThreadCluster, simulate, redis_url: str  # type: ignore[no-untyped-def]
) -> None:
    _queue_cli(redis_url, cluster.settings.namespace, "set", "default",
               "--concurrency-limit", "3")
    a, b = simulate("a"), simulate("b")
    _registered(cluster, "a", "b")
    _submit(cluster, 8)
    wait_for(lambda: len(a.inbox()) + len(b.inbox()) == 3)
    cluster.dispatcher.stopping.wait(0.5)
    assert len(a.inbox()) + len(b.inbox()) == 3
    _queue_cli(redis_url, cluster.settings.namespace, "set", "default", "--no-limit")
    wait_for(lambda: len(a.inbox()) + len(b.inbox()) == 8)


def test_paused_queue_holds_its_tasks_until_resumed(
    cluster: ThreadCluster, simulate, redis_url: str  # type: ignore[no-untyped-def]
) -> None:
    _queue_cli(redis_url, cluster.settings.namespace, "pause", "default")
    w = simulate("w")
    _registered(cluster, "w")
    _submit(cluster, 3)
    cluster.dispatcher.stopping.wait(0.5)
    assert w.inbox() == []
    _queue_cli(redis_url, cluster.settings.namespace, "resume", "default")
    wait_for(lambda: len(w.inbox()) == 3)


@pytest.mark.parametrize("bad_entries", [False, True], ids=["alone", "behind-bad-entries"])
def test_dispatcher_fails_a_task_whose_worker_never_acknowledges_past_its_timeout(
    real: redis.Redis, settings, redis_url: str, bad_entries: bool  # type: ignore[no-untyped-def]
) -> None:
    """Also behind bad entries of the deadlines (read a batch at a time from the
    earliest): a member that is not UTF-8, or one whose task's record is not a hash,
    stopped every overdue lease behind it from being failed, for good. They are set
    aside."""
    cluster = ThreadCluster(real, settings.replace(redis_url=redis_url, timeout_grace=0.3))
    keys = cluster.dispatcher.keys
    bad = [b"\xff\xfe-not-utf8", b"tampered|stuck|1.1-x"] if bad_entries else []
    if bad:
        real.zadd(keys.deadlines, {member: i for i, member in enumerate(bad)})
        real.set(keys.task("tampered"), "a string, not a hash")
    cluster.start()
    worker = SimulatedWorker(real, keys, "stuck", ("default",), 2, 0.0)
    worker.start()
    try:
        flow = Flow("stuck")
        node = flow.add_task(tasks.short_timeout)  # timeout=0.3 s
        node.args = (0.0,)
        run = flow.submit(real, namespace=settings.namespace)
        # The worker takes the task out of its inbox, keeps heartbeating, never acknowledges.
        wait_for(lambda: worker.inbox() and real.lpop(keys.inbox("stuck")))
        assert run.wait(timeout=20) == "failed"
        error = run.error(node)
        assert error is not None and error.type == "TimeoutError"
        assert "presumed stuck" in error.message
        assert real.zcard(keys.deadlines) == 0
        entries = sorted((Aside.from_blob(b) for b in real.hvals(keys.aside)),
                         key=lambda e: e.kind)
        assert [(e.key, e.kind, e.member) for e in entries] == [
            (keys.deadlines, kind, member) for kind, member in zip(
                ("unreadable", "wrong-type"), bad)]
    finally:
        worker.stopping.set()
        cluster.stop()


def test_why_names_what_holds_each_waiting_task(
    cluster: ThreadCluster, simulate, redis_url: str  # type: ignore[no-untyped-def]
) -> None:
    ns = cluster.settings.namespace
    _queue_cli(redis_url, ns, "pause", "default")
    simulate("w", capacity=2)
    _registered(cluster, "w")
    with Flow("held") as flow:
        first = tasks.constant(1)
        tasks.square(first)
        tasks.record_high(redis_url, "unused", "x")  # queue "high": nobody serves it
    run = flow.submit(cluster.client, namespace=ns)
    reasons = run.why()
    assert "queue default is paused" in reasons["constant"]
    assert reasons["square"] == "waiting for 1 upstream task"
    assert "no worker serves queue high" in reasons["record_high"]
    shown = CliRunner().invoke(balancer_cli, ["flow", run.id, "--json", "--redis-url",
                                              redis_url, "--namespace", ns])
    assert shown.exit_code == 0, shown.output
    rows = {r["name"]: r for r in json.loads(shown.output)["tasks"]}
    assert rows["constant"]["state"] == "queued"
    assert "paused" in rows["constant"]["why"]
    status = CliRunner().invoke(balancer_cli, ["status", "--json", "--redis-url", redis_url,
                                               "--namespace", ns])
    queues = {q["name"]: q for q in json.loads(status.output)["queues"]}
    assert "paused" in queues["default"]["held_by"]
    assert "no worker serves" in queues["high"]["held_by"]
