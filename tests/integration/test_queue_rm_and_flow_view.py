"""`balancer queue rm` removes only an empty queue and says what holds one in use;
`balancer flow ID` shows each task's worker, attempts and timings, and with --verbose
the traceback of a failure."""

from __future__ import annotations

import json
import subprocess
import sys

import redis
from balancer.common.keys import Keys

from balancer import Flow, Queue
from balancer.status import FLOWS_PAGE
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks


def _cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)


def test_queue_rm_refuses_a_queue_in_use_and_removes_an_empty_one(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    # Tasks queued where no worker serves: held by them.
    with Flow("stuck") as flow:
        tasks.constant(1)
    flow.add_task(tasks.constant, queue=Queue("lonely", priority=3))
    flow.submit(real, namespace=namespace)
    out = _cli(procs, "queue", "rm", "lonely")
    assert out.returncode == 1 and "queue lonely is in use, not removed: 1 task queued" \
        in out.stderr, out.stderr
    # A worker serving a queue holds it, even empty.
    procs.worker("--queue", "served", "--concurrency", "1")
    wait_for(lambda: real.zcard(keys.workers) >= 1, timeout=60)
    _cli(procs, "queue", "set", "served", "--priority", "2")
    out = _cli(procs, "queue", "rm", "served")
    assert out.returncode == 1 and "served by worker" in out.stderr, out.stderr
    # An empty queue nobody serves goes, settings and name.
    assert _cli(procs, "queue", "set", "spare", "--priority", "4").returncode == 0
    assert real.sismember(keys.queues, "spare") and real.exists(keys.queue_conf("spare"))
    out = _cli(procs, "queue", "rm", "spare")
    assert out.returncode == 0 and out.stdout.strip() == "queue spare removed", out.stderr
    assert not real.sismember(keys.queues, "spare")
    assert not real.exists(keys.queue_conf("spare"))
    out = _cli(procs, "queue", "rm", "spare")
    assert out.returncode == 1 and "no queue spare" in out.stderr


def test_balancer_flow_shows_worker_attempts_timings_and_tracebacks(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve()
    procs.worker("--concurrency", "2", "--name", "w-view")
    with Flow("viewed") as flow:
        ok = tasks.add(1, 2)
        tasks.always_fails(3)
        tasks.constant(1, upstream_tasks=[ok])
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "failed"
    out = _cli(procs, "flow", run.id)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"flow {run.id}  viewed  failed: 2/3 completed, 1 failed, 0 cancelled" in text
    rows = {line.split()[1]: line for line in text.splitlines()[2:]
            if line.startswith("  ") and not line.startswith(("      ", "  ("))}
    assert set(rows) == {"add", "always_fails", "constant"}
    for name in rows:
        assert "w-view" in rows[name] and rows[name].count("s ") >= 1
    assert rows["add"].split()[4] == "1"  # tries
    assert "error: ValueError" in text and "Traceback" not in text
    assert "(--verbose shows the tracebacks)" in text
    verbose = _cli(procs, "flow", run.id, "--verbose").stdout
    assert "Traceback (most recent call last)" in verbose
    assert "tests/integration/tasks.py" in verbose
    as_json = _cli(procs, "flow", run.id, "--json")
    assert '"run_s"' in as_json.stdout and '"attempts": 1' in as_json.stdout


def test_queue_rm_refuses_a_queue_a_flow_function_s_waiting_task_is_bound_for(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    """A @flow function's task that waits for a future is pending in its run's own list,
    not in a submitted flow's record: `queue rm` counted none, and removed its queue."""
    import threading

    from balancer import flow

    keys = Keys(namespace)
    ended: list[BaseException | None] = []

    @flow(redis_url=redis_url, namespace=namespace)
    def waits() -> None:
        first = tasks.constant.submit(1)  # no worker serves its queue: it stays queued
        tasks.square.with_options(queue_name="later").submit(first)

    def call() -> None:
        try:
            waits()
            ended.append(None)
        except BaseException as exc:  # cancelled below: FlowCancelled
            ended.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    wait_for(lambda: real.zcard(keys.flows) == 1 and real.llen(
        keys.flow_tasks(real.zrange(keys.flows, 0, 0)[0].decode())) == 2, timeout=30)
    run_id = real.zrange(keys.flows, 0, 0)[0].decode()
    out = _cli(procs, "queue", "rm", "later")
    assert out.returncode == 1 and "1 task pending" in out.stderr, out.stderr
    assert _cli(procs, "flow", "cancel", run_id).returncode == 0
    caller.join(60)
    assert not caller.is_alive() and ended and ended[0] is not None
    out = _cli(procs, "queue", "rm", "later")  # cancelled: nothing holds it now
    assert "in use" not in out.stderr, out.stderr


def test_flows_lists_the_runs_of_a_state_or_a_name_from_past_a_page_of_others(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """`balancer flows --state failed` and `--name 'old*'` find an older run behind more
    than a page (status.FLOWS_PAGE) of newer ones."""
    procs.serve()
    procs.worker("--concurrency", "1")
    with Flow("old-failed") as flow:
        tasks.always_fails(1)
    failed = flow.submit(real, namespace=namespace)
    assert failed.wait(timeout=60) == "failed"
    noise = Flow("noise")
    noise.add_task(tasks.constant, queue=Queue("nobody"))  # no worker serves it: running
    for _ in range(FLOWS_PAGE + 10):
        noise.submit(real, namespace=namespace)

    def listed(*args: str) -> list[dict[str, object]]:
        out = _cli(procs, "flows", "--json", *args)
        assert out.returncode == 0, out.stderr
        rows: list[dict[str, object]] = json.loads(out.stdout)
        return rows

    assert [r["id"] for r in listed("--state", "failed")] == [failed.id]
    assert [r["id"] for r in listed("--name", "old*", "-n", "5")] == [failed.id]
    running = listed("--state", "running", "-n", str(FLOWS_PAGE + 5))
    assert len(running) == FLOWS_PAGE + 5 and {r["name"] for r in running} == {"noise"}
    assert len(listed("-n", "3")) == 3
    none = _cli(procs, "flows", "--state", "cancelled")
    assert none.returncode == 0 and none.stdout.startswith("no flow runs match")
