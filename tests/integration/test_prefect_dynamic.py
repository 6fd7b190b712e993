"""Prefect 2/3's dynamic style (tests/integration/prefect2_flows.py, Prefect's snippets
with only the import changed) gives Prefect's documented results, on the embedded
cluster and on a real one (``balancer serve`` and worker processes), and each @flow call
shows as one flow run in ``balancer flows`` / ``balancer flow ID``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from balancer.common import partitions
from balancer.common.keys import Keys

from tests.conftest import Processes, wait_for

ROOT = Path(__file__).resolve().parents[2]
DRIVER = "from tests.integration.prefect2_flows import main; main()"


def _drive(env: dict[str, str], redis_url: str, namespace: str) -> dict[str, Any]:
    env = {**env, "TEST_REDIS_URL": redis_url, "TEST_KEY_PREFIX": f"{{{namespace}}}:",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _check_documented_results(out: dict[str, Any]) -> None:
    assert out["plain_call"] == 2  # a plain call inside a flow returns the task's value
    assert out["submit_and_result"] == 2
    assert out["futures_as_arguments"] == 5  # a future as an argument passes its result
    assert out["map_flow"] == [2, 3, 4]  # map: one run per item, results in order
    assert out["map_each_result"] == [11, 21]
    assert out["returns_futures"] == [2, 3, 4]  # futures returned resolve to results
    assert out["returns_a_failed_future"] == "TaskFailed"
    assert out["map_unmapped"] == [11, 12, 13]
    assert out["map_of_map"] == 12  # (1+2) + (2+2) + (3+2)
    assert out["branching"] == [8, 6]  # the function branches on a task's result
    assert out["loop_until"]["result"] == [1, 2, 3, 4, 5]  # submits until it holds
    assert out["loop_until"]["state"] == "Completed"
    assert out["wait_for_order"] == ["first", "second", "third"]
    failure = out["failure_as_state"]
    assert failure["name"] == "Failed" and failure["failed"] is True
    assert failure["message"] == "ValueError: boom"
    assert failure["downstream"] == "UpstreamFailed"  # never ran
    assert failure["called"] is True  # t(..., return_state=True) returns the state
    assert failure["raised"] == "TaskFailed"  # future.result() raises on failure
    assert out["raising_flow"] == "KeyError"  # the flow call raises what its body raised
    assert out["raising_state"]["failed"] is True
    assert "flow body failed" in out["raising_state"]["message"]
    assert out["flow_retries"] == [4, 3]  # ran three times, returned add_one(3)
    assert out["task_retries"] == 3  # @task(retries=2, retry_delay_seconds=...)
    assert out["timed_out"].startswith("TimeoutError")  # @task(timeout_seconds=...)
    assert out["parent"]["result"] == 13  # child(1) + child(10)
    assert out["async"] == [10, 20, 30]  # async def tasks, called and mapped
    # outside a flow: a call runs the plain function, submit and delay a run of its own
    assert out["outside"] == [42, 2, 3]
    # allow_failure: the dependent runs after a failed upstream, which passes None
    assert out["allow_failure"] == {"both": [None, 2], "after": 11, "blocked": "UpstreamFailed"}
    assert out["async_flow"] == [10, 20, 30]  # an async def flow gathering async tasks
    assert out["run_context"] == {"flow": "run_context", "has_id": True,
                                  "task": ["context_of_task", True, {"x": 3}]}
    assert out["quoted"] == [5, 5]
    assert out["typo"] == "TypeError"  # a call the task cannot take, refused as made
    assert out["done_callbacks"] == ["Completed", "Completed", "Failed", "at once"]
    # A flow and its tasks returning Completed(...) / Failed(...) from prefect.states.
    happy, sad = out["returned_states"]["happy"], out["returned_states"]["sad"]
    assert happy == [True, "I am happy with this result",
                     [7, True, "balancer.FAIL: the task says no"]]
    assert out["returned_states"]["called"] == happy[2]
    assert sad == [True, "How did this happen!?", "FailedRun"]
    assert out["static_cache_key"] == [1, 1, 1]  # cache_key_fn: ran once, reused twice
    # Keyed on the flow run and the inputs: 2 runs of 2 distinct inputs ran 4 times.
    assert out["cache_within_flow_run"] == [[[2, 2, 4], [2, 2, 4]], 4]
    # flow_run_name and task_run_name, formatted with the arguments (a format spec too)
    named = out["named_runs"]
    assert (named["flow"], named["task"]) == ("marvin-on-Thursday", "hello-marvin-on-Thursday")


def test_prefect2_snippets_on_the_embedded_cluster(real: redis.Redis, redis_url: str,
                                                   namespace: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    _check_documented_results(_drive(env, redis_url, namespace))


def test_the_readme_dynamic_example_runs_on_the_embedded_cluster() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    done = subprocess.run([sys.executable, "examples/dynamic.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "flow Completed: total = 60" in done.stdout


def _cli(procs: Processes, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "balancer.cli", *args, "--json"], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _run_snippets(procs: Processes, real: redis.Redis, redis_url: str, namespace: str,
                  *serve_args: str) -> dict[str, Any]:
    """Serve (the count stored before workers start), a process-pool and a thread-pool
    worker, then the snippets, their documented results checked."""
    procs.serve(*serve_args)
    wait_for(lambda: real.exists(Keys(namespace).partitions), timeout=30)
    procs.worker("--import", "tests.integration.prefect2_flows", "--concurrency", "3")
    procs.worker("--import", "tests.integration.prefect2_flows", "--concurrency", "2",
                 "--pool", "thread")
    out = _drive(procs.env, redis_url, namespace)
    _check_documented_results(out)
    return out


def test_prefect2_snippets_on_a_cluster_each_flow_call_one_run(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    out = _run_snippets(procs, real, redis_url, namespace)

    runs = {r["id"]: r for r in _cli(procs, "flows", "-n", "100")}
    # one run per @flow call: 17 calls in main(), with the two sub-runs of parent()
    names = sorted(r["name"] for r in runs.values())
    assert names.count("loop_until") == 1 and names.count("child") == 2
    assert names.count("raising_flow") == 2 and names.count("timed_out") == 1
    assert names.count("renamed") == 1
    loop = runs[out["loop_until"]["id"]]
    assert (loop["state"], loop["total"], loop["remaining"]) == ("completed", 5, 0)
    assert runs[out["raising_state"]["id"]]["state"] == "failed"
    raised = _cli(procs, "flow", out["raising_state"]["id"])
    assert raised["error"] == "KeyError: 'flow body failed'"
    assert [t["name"] for t in raised["tasks"]] == ["add_one"]

    shown = _cli(procs, "flow", out["loop_until"]["id"])
    assert [t["name"] for t in shown["tasks"]] == ["add_one"] * 5
    assert {t["state"] for t in shown["tasks"]} == {"completed"}
    # the run names, as `balancer flows` and `balancer flow ID` show them
    named = runs[out["named_runs"]["id"]]
    assert (named["name"], named["run_name"]) == ("named_runs", "marvin-on-Thursday")
    [my_task] = _cli(procs, "flow", out["named_runs"]["id"])["tasks"]
    assert (my_task["name"], my_task["run_name"]) == ("my_task", "hello-marvin-on-Thursday")
    parent = _cli(procs, "flow", out["parent"]["id"])
    assert [t["state"] for t in parent["tasks"]] == ["sub-run completed"] * 2
    for sub in parent["tasks"]:
        assert runs[sub["id"]]["name"] == "child"
        shown = _cli(procs, "flow", sub["id"])
        assert shown["parent"] == out["parent"]["id"]
        assert [t["name"] for t in shown["tasks"]] == ["add_one"]


def test_prefect2_snippets_on_a_cluster_of_3_partitions_runs_each_in_its_own(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    """@flow runs are placed over the partitions as submitted flows are, a sub-run in its
    parent's (docs/scaling.md, Partitions); the documented results hold."""
    out = _run_snippets(procs, real, redis_url, namespace, "--partitions", "3")
    runs = {r["id"]: r for r in _cli(procs, "flows", "-n", "100")}
    assert len({partitions.of_flow(run_id) for run_id in runs}) > 1
    parent = _cli(procs, "flow", out["parent"]["id"])
    assert [t["state"] for t in parent["tasks"]] == ["sub-run completed"] * 2
    for sub in parent["tasks"]:
        assert partitions.of_flow(sub["id"]) == partitions.of_flow(out["parent"]["id"])


def test_a_run_is_not_finished_while_its_function_runs(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """Between two tasks, with every task of the run completed, the run still reads
    running: its function may add more."""
    import threading

    from balancer import flow
    from tests.integration import prefect2_flows as pf

    procs.serve()
    procs.worker("--import", "tests.integration.prefect2_flows", "--concurrency", "2")
    keys = Keys(namespace)
    between = threading.Event()
    go_on = threading.Event()
    seen: dict[str, Any] = {}

    @flow(redis_url=procs.env["BALANCER_REDIS_URL"], namespace=namespace)
    def two_steps() -> int:
        first = pf.add_one(1)
        seen["run"] = real.zrange(keys.flows, -1, -1)[0].decode()
        between.set()
        go_on.wait(30)
        return pf.add_one(first)

    result: list[int] = []
    caller = threading.Thread(target=lambda: result.append(two_steps()))
    caller.start()
    assert between.wait(60)
    record = real.hgetall(keys.flow(seen["run"]))
    assert (record[b"state"], record[b"total"], record[b"remaining"]) == (
        b"running", b"1", b"1")
    [row] = [r for r in _cli(procs, "flows") if r["id"] == seen["run"]]
    assert (row["state"], row["total"], row["remaining"]) == ("running", 1, 0)  # 1/1 done
    go_on.set()
    caller.join(60)
    assert result == [3]
    record = real.hgetall(keys.flow(seen["run"]))
    assert (record[b"state"], record[b"total"], record[b"remaining"]) == (
        b"completed", b"2", b"0")


@pytest.mark.parametrize("bad", ["wait_for", "map lengths", "no iterable", "closed run"])
def test_bad_dynamic_calls_are_clear_errors(bad: str, real: redis.Redis, namespace: str,
                                            redis_url: str) -> None:
    from balancer import FlowError, flow
    from tests.integration import prefect2_flows as pf

    kept: list[Any] = []

    @flow(redis_url=redis_url, namespace=namespace)
    def misuse() -> None:
        if bad == "wait_for":
            pf.add_one.submit(1, wait_for=[42])
        elif bad == "map lengths":
            pf.add.map([1, 2], [1, 2, 3])
        elif bad == "no iterable":
            pf.add.map(1, 2)
        else:
            from balancer.dynamic import current_run

            kept.append(current_run())

    expected = {"wait_for": (TypeError, "wait_for takes futures"),
                "map lengths": (ValueError, "position 0 has 2, position 1 has 3"),
                "no iterable": (TypeError, "no iterable argument"),
                "closed run": (FlowError, "is closed")}[bad]
    if bad == "closed run":
        misuse()
        with pytest.raises(expected[0], match=expected[1]):
            kept[0].submit(pf.add_one, (1,), {})
    else:
        with pytest.raises(expected[0], match=expected[1]):
            misuse()


def test_a_flow_functions_tasks_are_signed_and_run_by_a_signing_cluster(
        procs: Processes, real: redis.Redis) -> None:
    """With BALANCER_SIGNING_KEYS, the tasks a @flow function adds carry signatures the
    workers verify (a refused one would be quarantined and its run would never end)."""
    procs.env["BALANCER_SIGNING_KEYS"] = "a-signing-key-for-the-dynamic-style-test"
    procs.serve()
    procs.worker("--concurrency", "2", "--pool", "process")
    done = subprocess.run([sys.executable, "examples/dynamic.py"], cwd=ROOT, env=procs.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "flow Completed: total = 60" in done.stdout


def test_a_task_class_built_with_arguments_runs_in_a_flow_function_as_in_a_flow(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its constructor's arguments travel with each call from a @flow function too (they
    did only from `with Flow`: the worker could not build it)."""
    from balancer import Flow, flow
    from tests.integration.tasks import Scale

    monkeypatch.delenv("BALANCER_REDIS_URL", raising=False)  # the embedded cluster
    triple = Scale(3, name="triple")

    @flow
    def scaled(x: int) -> int:
        return triple(x) + triple.submit(x + 1).result()

    assert scaled(2) == 6 + 9
    with Flow("scaled") as classic:
        node = triple(2)
    assert classic.run(quiet=True).result[node].result == 6


def test_prefects_runtime_names_a_flow_functions_own_run_in_its_body(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from balancer import flow, runtime
    from tests.integration.tasks import constant

    monkeypatch.delenv("BALANCER_REDIS_URL", raising=False)  # the embedded cluster

    @flow(name="knows-its-run")
    def body() -> list[object]:
        constant(1)
        return [runtime.flow_run.id, runtime.flow_run.name, runtime.task_run.id]

    state = body(return_state=True)
    assert state.result() == [state.flow_run_id, "knows-its-run", None]
