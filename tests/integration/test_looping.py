"""Prefect 1's LOOP on real workers: a task loops with its result carried from one
iteration to the next, a retry goes on from the last iteration, and the task's timeout
bounds each iteration (in the pool and at the dispatcher), not the loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from balancer import Flow
from tests.conftest import Processes
from tests.integration import loop_tasks

pytestmark = pytest.mark.integration


def _cluster(procs: Processes, tmp_path: Path, pool: str) -> Processes:
    procs.env["LOOP_LOG"] = str(tmp_path / "loop.log")
    # A short grace: the dispatcher fails a lease its timeout plus this after it began,
    # unless each iteration pushes the deadline out.
    procs.env["BALANCER_TIMEOUT_GRACE"] = "0.5"
    procs.serve()
    procs.worker("--pool", pool, "--concurrency", "2",
                 "--import", "tests.integration.loop_tasks")
    return procs


@pytest.fixture(params=["thread", "process"])
def looping(request: pytest.FixtureRequest, procs: Processes, tmp_path: Path
            ) -> Processes:
    return _cluster(procs, tmp_path, request.param)


@pytest.fixture
def process_pool(procs: Processes, tmp_path: Path) -> Processes:
    """A task that kills its process: a pool child's (a thread pool's is the worker)."""
    return _cluster(procs, tmp_path, "process")


def test_a_looping_task_carries_its_result_from_one_iteration_to_the_next(
        looping: Processes, real: redis.Redis, namespace: str) -> None:
    with Flow("fibonacci") as flow:
        below_100 = loop_tasks.largest_fibonacci_below(100)
        below_1000 = loop_tasks.largest_fibonacci_below(1000)
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.state == "completed", run.first_failure()
    assert (run.result(below_100), run.result(below_1000)) == (89, 987)


def _paged(real: redis.Redis, namespace: str, tmp_path: Path, dies: bool) -> list[str]:
    """Pages 1..4, broken once at page 3; the lines each iteration noted."""
    with Flow("paged") as flow:
        got = loop_tasks.pages(4, 3, str(tmp_path / "broke-once"), dies)
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.state == "completed", run.first_failure()
    assert run.result(got) == [1, 2, 3, 4]
    return (tmp_path / "loop.log").read_text().splitlines()


PAGED = ["page 1 after []", "page 2 after [1]", "page 3 after [1, 2]",
         "page 3 after [1, 2]",  # the run after the failure, from the iteration it broke
         "page 4 after [1, 2, 3]"]


def test_a_retried_loop_goes_on_from_its_last_iteration(
        looping: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    assert _paged(real, namespace, tmp_path, dies=False) == PAGED


def test_a_loop_whose_process_died_goes_on_from_its_last_iteration(
        process_pool: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    assert _paged(real, namespace, tmp_path, dies=True) == PAGED


def test_a_task_s_timeout_bounds_each_iteration_not_the_whole_loop(
        looping: Processes, real: redis.Redis, namespace: str) -> None:
    """5 iterations of 0.4 s under a timeout of 1 s: 2 s in all, past the timeout and
    past the lease's first deadline at the dispatcher (timeout + 0.5 s grace); an
    iteration that outlives the timeout is stopped as any run past it."""
    with Flow("polling") as flow:
        rounds = loop_tasks.polls(5, 0.4)
        stalled = loop_tasks.stalls_in_round(3)
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.task_state(rounds) == "completed" and run.result(rounds) == 5
    assert run.task_state(stalled) == "failed"
    assert "past its timeout of 0.5s" in run.error(stalled).message
