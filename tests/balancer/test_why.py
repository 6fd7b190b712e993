"""What holds a waiting task, in words: the pure reasoning behind `balancer flow`."""

from __future__ import annotations

import pytest
from balancer.common.models import QueueConfig, WorkerInfo

from balancer.why import ClusterFacts, TaskFacts, queue_hold, reason


def cluster(*workers: WorkerInfo, leased: dict[str, int] | None = None,
            configs: dict[str, QueueConfig] | None = None,
            inflight: dict[str, int] | None = None) -> ClusterFacts:
    return ClusterFacts(list(workers), leased or {}, configs or {}, inflight or {}, "1|d")


W = WorkerInfo("w1", ("default",), capacity=2)


@pytest.mark.parametrize(("task", "expected"), [
    (TaskFacts("pending", "default", deps=2), "waiting for 2 upstream tasks"),
    (TaskFacts("pending", "default", deps=1), "waiting for 1 upstream task"),
    (TaskFacts("retrying", "default", retry_due_in=1.25), "retry delay: due in 1.2s"),
    (TaskFacts("queued", "default", ahead=None), "leased to a worker"),
    (TaskFacts("running", "default", worker="w1"), "running on worker w1"),
    (TaskFacts("running", "default", deps=3, mapped=10), "mapped into 10 runs, 3 not"),
    (TaskFacts("queued", "default", ahead=None, in_gate=True), "the dispatcher applies its"
                                                               " trigger or expands its map"),
    (TaskFacts("dead", "default"), "quarantined"),
    (TaskFacts("queued", "default"), "next in line in queue default"),
    (TaskFacts("queued", "default", ahead=3), "3 tasks ahead of it in queue default"),
    (TaskFacts("queued", "default", ahead=None, retry_due_in=1.0),
     "its queue default cannot take it, the key holds another type"),
])
def test_each_state_names_what_holds_the_task(task: TaskFacts, expected: str) -> None:
    assert expected in reason(task, cluster(W))


@pytest.mark.parametrize("state", ["completed", "failed", "upstream_failed", "skipped"])
def test_finished_tasks_wait_for_nothing(state: str) -> None:
    assert reason(TaskFacts(state, "default"), cluster(W)) == ""


def test_a_paused_queue_holds_its_tasks() -> None:
    facts = cluster(W, configs={"default": QueueConfig("default", paused=True)})
    assert "paused" in reason(TaskFacts("queued", "default"), facts)


def test_a_queue_no_worker_serves_is_named_with_the_fix() -> None:
    text = reason(TaskFacts("queued", "reports"), cluster(W))
    assert "no worker serves queue reports" in text
    assert "worker start --queue reports" in text


def test_a_worker_serving_every_queue_counts() -> None:
    everything = WorkerInfo("e", ("*",), capacity=1)
    assert queue_hold("reports", cluster(everything)) is None


def test_a_queue_at_its_concurrency_limit_says_so() -> None:
    facts = cluster(W, configs={"default": QueueConfig("default", concurrency_limit=2)},
                    inflight={"default": 2})
    assert "concurrency limit (2/2" in reason(TaskFacts("queued", "default"), facts)


def test_full_workers_hold_the_queue() -> None:
    other = WorkerInfo("w2", ("default",), capacity=1)
    facts = cluster(W, other, leased={"w1": 2, "w2": 1})
    assert "all 2 workers serving queue default are full" in reason(
        TaskFacts("queued", "default"), facts)
    facts.leased["w2"] = 0
    assert queue_hold("default", facts) is None


def test_without_a_dispatcher_nothing_is_handed_out() -> None:
    facts = cluster(W)
    facts.leader = None
    assert "balancer serve" in reason(TaskFacts("queued", "default"), facts)


def test_a_tag_at_its_limit_holds_a_queued_task_that_carries_it() -> None:
    facts = cluster(W)
    facts.tag_limits, facts.tag_leased = {"db": 2}, {"db": 2}
    text = reason(TaskFacts("queued", "default", ahead=0, tags=("io", "db")), facts)
    assert "tag db is at its concurrency limit (2/2 leased" in text
    assert reason(TaskFacts("queued", "default", ahead=0, tags=("io",)), facts) == \
        "next in line in queue default"
    facts.tag_leased = {"db": 1}
    assert "next in line" in reason(TaskFacts("queued", "default", tags=("db",)), facts)
