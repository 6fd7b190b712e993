"""A run re-attached by id from another process: wait, results, states, why and cancel
work there as on the handle ``submit`` returned."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, FlowRun, flow
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks

ATTACHED = """
import json, sys
import balancer
run = balancer.attach(sys.argv[1], redis_url=sys.argv[2], namespace=sys.argv[3])
if sys.argv[4] == "cancel":
    done = run.cancel()
    print(json.dumps([done.state, done.cancelled]))
else:
    state = run.wait(timeout=60)
    print(json.dumps({"state": state, "results": run.results(), "states": run.states(),
                      "why": run.why(), "total": run.result("add"), "name": run.name}))
"""


def _in_another_process(procs: Processes, *args: str) -> object:
    out = subprocess.run([sys.executable, "-c", ATTACHED, *args], cwd=ROOT, env=procs.env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_another_process_attaches_by_id_waits_and_reads_every_result(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    procs.serve()
    procs.worker("--concurrency", "2")
    with Flow("attached") as flow:
        a = tasks.constant(2)
        b = tasks.constant(5)
        tasks.add(a, b)
    run = flow.submit(real, namespace=namespace)
    seen = _in_another_process(procs, run.id, redis_url, namespace, "wait")
    assert seen == {"state": "completed", "results": {"constant": 2, "constant#2": 5, "add": 7},
                    "states": {"constant": "completed", "constant#2": "completed",
                               "add": "completed"},
                    "why": {}, "total": 7, "name": "attached"}
    assert seen["results"] == run.results()  # type: ignore[index]


def test_another_process_attached_to_a_flow_function_s_run_reads_the_tasks_it_added(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    """A @flow function's tasks are listed as it adds them, not in its record's task
    list: attached, such a run read as having no task at all."""
    procs.serve()
    procs.worker("--concurrency", "2")

    @flow(name="attached-fn", redis_url=redis_url, namespace=namespace)
    def attached() -> int:
        return tasks.add(tasks.constant(2), tasks.constant(5))

    state = attached(return_state=True)
    seen = _in_another_process(procs, state.flow_run_id, redis_url, namespace, "wait")
    assert seen == {"state": "completed", "results": {"constant": 2, "constant#2": 5, "add": 7},
                    "states": {"constant": "completed", "constant#2": "completed",
                               "add": "completed"},
                    "why": {}, "total": 7, "name": "attached-fn"}


def test_another_process_attaches_and_cancels_and_this_one_sees_it(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--concurrency", "1", "--pool", "process")
    wait_for(lambda: real.zcard(keys.workers) >= 1, timeout=60)
    started, gate = f"{namespace}:s-{uuid.uuid4().hex[:6]}", f"{namespace}:g"
    try:
        with Flow("to-cancel") as flow:
            tasks.note_then_wait_for_gate(redis_url, started, gate, 60)
        run = flow.submit(real, namespace=namespace)
        assert real.blpop([started], timeout=60) is not None
        assert _in_another_process(procs, run.id, redis_url, namespace, "cancel") == [
            "cancelled", 1]
        assert run.wait(timeout=30) == "cancelled"
        assert run.states() == {"note_then_wait_for_gate": "cancelled"}
    finally:
        real.delete(started, gate)


def test_attaching_to_an_unknown_run_says_so(real: redis.Redis, namespace: str) -> None:
    with pytest.raises(KeyError, match="no flow run nope"):
        FlowRun.attach("nope", real, namespace=namespace)
