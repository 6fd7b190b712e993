"""Run names on a real cluster: a task run's name is made on the worker from the
arguments it receives (upstream results too), recorded on its task and shown by
`balancer flow`; a name that cannot be made fails the task for good; a flow run's name
that cannot be made raises before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, flow
from balancer.runnames import RunNameError
from tests.conftest import Processes
from tests.integration import named_tasks

ROOT = Path(__file__).resolve().parents[2]


def _flow_json(procs: Processes, flow_id: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "balancer.cli", "flow", flow_id, "--json"],
                          cwd=ROOT, env=procs.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_task_run_is_named_on_the_worker_from_its_upstream_s_result(
        pool: str, procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.named_tasks",
                           "--pool", pool)
    worker = procs.procs[-1]
    with Flow("named") as f:
        doubled = named_tasks.double(named_tasks.add(20, 1))
    run = f.run(timeout=60, client=real, namespace=namespace, quiet=True)

    assert run.state == "completed"
    assert run.result(doubled) == "double-21"  # runtime.task_run.name, in the task
    shown = {t["name"]: t for t in _flow_json(procs, run.id)["tasks"]}
    assert shown["double"]["run_name"] == "double-21"
    assert shown["add"]["run_name"] == ""  # no task_run_name: none recorded
    assert "name=double runs as 'double-21'" in procs.log(worker)


def test_a_task_run_name_that_cannot_be_made_fails_the_task_without_retrying(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.named_tasks")
    with Flow("unnamable") as f:
        named_tasks.unnamable()
    run = f.run(timeout=60, client=real, namespace=namespace, quiet=True)

    assert run.state == "failed"
    [row] = _flow_json(procs, run.id)["tasks"]
    assert row["state"] == "failed" and row["attempts"] == 1  # retries=2, none used
    assert row["error"].startswith("balancer.RunNameError: task tests.integration.named_tasks"
                                   ":unnamable: cannot make the run's name from task_run_name"
                                   " function _broken_name: LookupError")


def test_a_flow_run_name_that_cannot_be_made_raises_before_anything_is_written(
        real: redis.Redis, redis_url: str, namespace: str) -> None:
    ran: list[int] = []

    @flow(flow_run_name="{region}-{day:%A}", redis_url=redis_url, namespace=namespace)
    def report(region: str, day: str) -> None:
        ran.append(1)

    with pytest.raises(RunNameError, match="flow 'report': cannot make the run's name"):
        report("eu", "not a date")  # a str takes no %A
    assert ran == [] and real.zcard(Keys(namespace).flows) == 0
    assert not list(real.scan_iter(match=f"{Keys(namespace).prefix}*"))


def test_a_run_completed_from_its_cache_is_named_too(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.named_tasks")
    keys = Keys(namespace)
    runs = []
    for _ in range(2):
        with Flow("cached") as f:
            node = named_tasks.cached_square(5)
        run = f.run(timeout=60, client=real, namespace=namespace, quiet=True)
        assert run.result(node) == 25
        runs.append(real.hmget(keys.task(run.ids[node]), ["run_name", "cached"]))
    assert runs == [[b"cached-5", None], [b"cached-5", b"1"]]  # the second from the cache


def test_a_task_reads_its_flow_run_s_parameters(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    """Prefect 1's `prefect.context.parameters` and Prefect 2/3's
    `runtime.flow_run.parameters`, in a task on a worker: a Prefect 1 flow's Parameters
    (defaults too), and a @flow function's arguments (those that can be stored)."""
    from balancer import Parameter

    procs.serve_and_worker(real, namespace, "--import", "tests.integration.named_tasks")
    with Flow("params") as f:
        Parameter("day", default="today")
        Parameter("n", default=1)
        seen = named_tasks.parameters_seen()
    run = f.run(timeout=60, client=real, namespace=namespace, quiet=True,
                parameters={"n": 5})
    assert run.result(seen) == {"context": {"day": "today", "n": 5},
                                "runtime": {"day": "today", "n": 5}}

    @flow(redis_url=redis_url, namespace=namespace)
    def dynamic(region: str, limit: int = 3, lock: object = None) -> dict[str, object]:
        return dict(named_tasks.parameters_seen())

    import threading  # an object msgpack cannot carry: left out, the others kept

    got = dynamic("eu", lock=threading.Lock())
    assert got == {"context": {"region": "eu", "limit": 3},
                   "runtime": {"region": "eu", "limit": 3}}


def test_copies_named_in_a_loop_name_each_run_and_share_the_task_s_cache(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    """Prefect's `t.with_options(task_run_name=...)` per call: the copy's template
    travels with the call (signed with it) and names the run on the worker; the name is
    no input of the cache, so the copies share the task's entries."""
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.named_tasks",
                           "--concurrency", "2")
    keys = Keys(namespace)

    @flow(redis_url=redis_url, namespace=namespace)
    def loop() -> list[int]:
        return [named_tasks.cached_square.with_options(task_run_name=f"sq-{{x}}-{i}")(3)
                for i in range(3)]

    state = loop(return_state=True)
    assert state.result() == [9, 9, 9]
    rows = _flow_json(procs, state.flow_run_id)["tasks"]
    assert [r["run_name"] for r in rows] == ["sq-3-0", "sq-3-1", "sq-3-2"]
    cached = [real.hget(keys.task(r["id"]), "cached") for r in rows]
    assert cached == [None, b"1", b"1"]  # one run, then its cache entry for the others
