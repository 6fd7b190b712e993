"""The facts of a task run the records hold, and a run's facts reaching the task wherever
the worker runs it (its slot's thread, a thread of its own past a timeout, an event loop)."""

from __future__ import annotations

from datetime import datetime, timezone

import redis
from balancer.common import codec
from balancer.common.keys import Keys
from balancer.common.signals import Lease
from balancer.worker import runfacts
from balancer.worker.executor import execute
from balancer.worker.pool import ThreadRunner

from balancer.runcontext import RunFacts, bound

CALL = codec.pack([[], {}])


def _lease(task_id: str = "t1") -> Lease:
    return Lease(task_id, "tok", "default", "f1", None, "m:f", "extract", b"", CALL)


def test_the_records_give_runs_so_far_tags_flow_name_and_a_scheduled_runs_due_time(
        fake: redis.Redis) -> None:
    keys = Keys("ns")
    fake.hset(keys.task("t1"), mapping={"failures": 1, "lost": 2, "tags": "io,db"})
    fake.hset(keys.flow("f1"), mapping={"name": "nightly", "created": 1_700_000_000_000,
                                        "scheduled": 1_699_999_999_000})
    facts = runfacts.facts(_lease(), "w1", fake, keys)
    assert facts.more()["task_run_count"] == 4  # 1 retry, 2 crashes, and this run
    assert facts.more()["task_tags"] == ["db", "io"]
    assert facts.more()["flow_name"] == "nightly"
    assert facts.more()["date"] == datetime.fromtimestamp(1_699_999_999, timezone.utc)


def test_an_unscheduled_run_stands_for_its_submit_and_bad_counts_read_as_none(
        fake: redis.Redis) -> None:
    keys = Keys("ns")
    fake.hset(keys.task("t1"), mapping={"failures": "x"})
    fake.hset(keys.flow("f1"), mapping={"created": 1_700_000_000_000})
    more = runfacts.read(fake, keys, "t1", "f1")
    assert more["task_run_count"] == 1 and more["task_tags"] == [] and more["flow_name"] is None
    assert more["scheduled_start_time"] == datetime.fromtimestamp(1_700_000_000, timezone.utc)
    assert more["today"] == "2023-11-14"


def test_a_task_sees_its_run_on_its_thread_on_a_timeout_thread_and_in_an_event_loop() -> None:
    facts = RunFacts("t9", "extract", "f1", "default", "w1")
    runner = ThreadRunner(1 << 20)
    with bound(facts):
        for path in ("tests.worker.tasks:my_run_id", "tests.worker.tasks:my_run_id_async"):
            assert codec.unpack(execute(path, CALL, 1 << 20).payload) == "t9"
            assert codec.unpack(runner.run(path, CALL, timeout=30).payload) == "t9"
    assert codec.unpack(execute("tests.worker.tasks:my_run_id", CALL, 1 << 20).payload) is None
