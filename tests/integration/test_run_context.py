"""balancer.context on real workers: a task knows its run (ids, map index, how many times it
ran, its flow's name and date) and logs lines carrying its ids, in either pool, on the
slot's thread or a thread of its own."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import redis

from balancer import Flow
from tests.conftest import Processes, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_task_reads_its_run_from_balancer_context_and_logs_with_its_ids(
        procs: Processes, real: redis.Redis, namespace: str, pool: str) -> None:
    procs.serve_and_worker(real, namespace, "--concurrency", "2", "--pool", pool)
    worker = procs.procs[-1]
    before = datetime.now(timezone.utc)
    with Flow("knows-itself") as flow:
        mapped = tasks.run_facts.map([False, True])
        retried = tasks.run_facts(True)
        timed = tasks.run_facts_in_time(True)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed", run.states()
    items = run.result(mapped)
    child_ids = [facts["task_run_id"] for facts in items]
    assert [facts["map_index"] for facts in items] == [0, 1]
    assert [facts["task_full_name"] for facts in items] == ["run_facts[0]", "run_facts[1]"]
    assert child_ids == [f"{run.ids[mapped]}-{i}" for i in range(2)]
    # The second item failed its first run: its second knows it.
    assert [facts["task_run_count"] for facts in items] == [1, 2]
    for node, facts in ((retried, run.result(retried)), (timed, run.result(timed))):
        assert facts["task_run_id"] == run.ids[node] and facts["map_index"] is None
        assert facts["task_run_count"] == 2
    facts = run.result(retried)
    assert facts["task_name"] == facts["task_full_name"] == "run_facts"
    assert facts["task_tags"] == ["ctx", "facts"]
    assert facts["flow_run_id"] == run.id and facts["flow_name"] == "knows-itself"
    assert facts["queue"] == "default" and facts["worker"]
    submitted = datetime.fromisoformat(facts["date"])
    assert submitted == datetime.fromisoformat(facts["scheduled_start_time"])
    assert abs((submitted - before).total_seconds()) < 60  # when it was submitted
    assert facts["today"] == submitted.date().isoformat()
    # Each run logged through context.logger: a line with its ids, in the worker's log.
    ids = [*child_ids, run.ids[retried], run.ids[timed]]
    wait_for(lambda: all(f"task={i} flow={run.id} " in procs.log(worker) for i in ids),
             timeout=10)
    assert "reading my run's facts" in procs.log(worker)


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_what_a_log_stdout_task_prints_is_logged_with_its_ids(
        procs: Processes, real: redis.Redis, namespace: str, pool: str) -> None:
    procs.serve_and_worker(real, namespace, "--concurrency", "2", "--pool", pool)
    worker = procs.procs[-1]
    with Flow("chatty") as flow:
        nodes = [tasks.says(word) for word in ("hello", "again")]
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed"
    wanted = [f"task={run.ids[node]} flow={run.id} name=says: {line}"
              for node, word in zip(nodes, ("hello", "again"))
              for line in (f"saying {word}", "and done")]
    wait_for(lambda: all(line in procs.log(worker) for line in wanted), timeout=10)
    log = procs.log(worker)
    assert all(f"INFO    balancer.task: {line}" in log for line in wanted), log
    assert "\nsaying hello\n" not in log  # not as a bare line too
