"""Prefect 1's state handlers with real processes: a task's are called in the worker's
pool process that runs it, at each change of its run's state, retries included, and
on_failure once it fails for good; a flow's are called by flow.run() in the client. And
Prefect 2/3's hooks, on tasks and @flow functions, on a real Redis."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, TaskFailed, flow
from tests.conftest import Processes, wait_for
from tests.integration import handled_tasks
from tests.integration.conftest import ThreadCluster

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_task_handlers_run_on_the_worker_and_flow_handlers_in_flow_run(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path, pool: str) -> None:
    log = tmp_path / "handled.log"
    procs.env["HANDLED_LOG"] = str(log)
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.handled_tasks",
                           "--concurrency", "1", "--pool", pool)
    told: list[tuple[str, str, str]] = []
    failures: list[Any] = []

    def note(flow: Flow, old: Any, new: Any) -> None:
        told.append((flow.name, type(old).__name__, type(new).__name__))

    with Flow("handled", state_handlers=[note],
              on_failure=lambda flow, state: failures.append(state)) as flow:
        handled_tasks.triple(handled_tasks.flaky(1))
        six = handled_tasks.triple(2)
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)

    assert run.is_failed()
    lines = [re.sub(r" pid=\d+$", "", line) for line in log.read_text().splitlines()]
    flaky = [line for line in lines if line.startswith(("flaky ", "on_failure flaky"))]
    assert flaky == [
        "flaky Pending -> Running None",
        "flaky Running -> Retrying ValueError: no luck with 1",
        "flaky Retrying -> Running None",
        "flaky Running -> Failed ValueError: no luck with 1",
        "on_failure flaky Failed ValueError: no luck with 1"]
    assert [line for line in lines if line.startswith("triple ")] == [
        "triple Pending -> Running None", "triple Running -> Success 6"]
    pids = {int(p) for p in re.findall(r"pid=(\d+)", log.read_text())}
    assert os.getpid() not in pids  # the worker's process ran them, not this one
    assert told == [("handled", "Scheduled", "Running"), ("handled", "Running", "Failed")]
    [state] = failures
    assert state.is_failed() and state.message.startswith("Some tasks failed.")
    assert state.result[six].is_successful() and state.result[six].result == 6



def test_prefect_2_hooks_of_tasks_and_flow_functions_are_called_as_runs_end(
        cluster: ThreadCluster, redis_url: str, namespace: str) -> None:
    """A task's on_completion / on_failure on the worker (threads here, in this process),
    once its run ended so (a failure retried is not one); a @flow function's on_running,
    on_completion and on_failure in the calling process, with its run and final state."""
    cluster.add_worker(concurrency=2)
    handled_tasks.HOOKED.clear()
    seen: list[tuple[str, str, str]] = []

    def note(kind: str) -> Any:
        return lambda flow, run, state: seen.append((kind, flow.name, state.name))

    @flow(redis_url=redis_url, namespace=namespace, on_running=[note("running")],
          on_completion=[note("completed")], on_failure=[note("failed")])
    def halves(xs: list[int]) -> list[float]:
        return [handled_tasks.halve(x) for x in xs]

    assert halves([2, 4]) == [1.0, 2.0]
    assert sorted(handled_tasks.HOOKED) == [("completed", "halve", "Completed", 1)] * 2
    assert seen == [("running", "halves", "Running"), ("completed", "halves", "Completed")]

    handled_tasks.HOOKED.clear()
    seen.clear()
    with pytest.raises(TaskFailed):
        halves([3])
    assert handled_tasks.HOOKED == [("failed", "halve", "Failed", 2)]  # after its retry
    assert seen == [("running", "halves", "Running"), ("failed", "halves", "Failed")]


def test_a_run_killed_past_its_timeout_tells_its_handlers_from_the_next_pool_process(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """The process pool kills a run past its timeout, so the run cannot call its handlers:
    the child that replaces it does, Running -> Retrying while a retry is left, then
    Running -> TimedOut, and on_failure once."""
    log = tmp_path / "handled.log"
    procs.env["HANDLED_LOG"] = str(log)
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.handled_tasks",
                           "--concurrency", "1")
    with Flow("stalled") as flow:
        handled_tasks.stalls()
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.is_failed()
    wait_for(lambda: "on_failure" in log.read_text(), timeout=20)
    lines = [re.sub(r" pid=\d+$", "", line) for line in log.read_text().splitlines()]
    # The next child tells of the kill on a thread of its own, while the retry may start
    # in it: those two lines may come in either order.
    assert lines.index("stalls Retrying -> Running None") < len(lines) - 2
    assert sorted(lines) == sorted([
        "stalls Pending -> Running None",
        "stalls Running -> Retrying TimeoutError: task"
        " tests.integration.handled_tasks:stalls ran past its timeout of 0.5s and was stopped",
        "stalls Retrying -> Running None",
        "stalls Running -> TimedOut TimeoutError: task"
        " tests.integration.handled_tasks:stalls ran past its timeout of 0.5s and was stopped",
        "on_failure stalls TimedOut TimeoutError: task"
        " tests.integration.handled_tasks:stalls ran past its timeout of 0.5s and was stopped"])
    assert lines[-1].startswith("on_failure") and "-> TimedOut" in lines[-2]


def test_a_run_whose_process_died_tells_its_handlers_from_the_next_pool_process(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """A pool process killed under its run (the kernel's OOM killer, a segfault) cannot
    call the run's handlers either: the child that replaces it does, Running -> Retrying
    while the task is put back, then Running -> Failed once it is quarantined at the
    poison threshold, with on_failure (Prefect 1's and 2/3's) once: an alert wired to
    on_failure hears of a task that keeps killing its process."""
    log = tmp_path / "handled.log"
    procs.env["HANDLED_LOG"] = str(log)
    procs.env["BALANCER_POISON_THRESHOLD"] = "2"
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.handled_tasks",
                           "--concurrency", "2")
    with Flow("dying") as flow:
        handled_tasks.dies()
        handled_tasks.dies_hooked()
    flow.submit(real, namespace=namespace)

    def said() -> list[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [re.sub(r" pid=\d+$", "", line) for line in lines]

    def of_dies(lines: list[str]) -> list[str]:
        return [line for line in lines if "dies " in line or line.endswith(" dies")]

    # Every line is waited for: the first crash is told by the child that replaced the
    # first dead one, which may start after the second crash was told (a busy host).
    wait_for(lambda: len(of_dies(said())) >= 5 and "hook failed" in log.read_text(),
             timeout=60)
    lines = said()
    died = ("balancer.WorkerProcessDied: the process running task"
            " tests.integration.handled_tasks:dies died (exit code -9)")
    told = of_dies(lines)
    # The next child tells of the crash on a thread of its own while the task, put back,
    # may start again at once in the other child: those two lines come in either order.
    assert sorted(told) == sorted([
        "dies Pending -> Running None",
        f"dies Running -> Retrying {died}",
        "dies Pending -> Running None",  # a crash is no failure: the run after it is Pending
        f"dies Running -> Failed {died}",
        f"on_failure dies Failed {died}"])
    assert told[0] == "dies Pending -> Running None"  # the first run, before any crash
    assert told.index(f"dies Running -> Failed {died}") < told.index(
        f"on_failure dies Failed {died}")
    assert [line for line in lines if line.startswith("hook ")] == [
        "hook failed dies_hooked Failed run_count=2"]


def test_handlers_whose_pool_process_died_before_they_returned_are_told_by_the_next(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """The child told to call a crashed run's handlers takes the task again, put back, and
    dies of it while they still run: the child after it calls them (and the second
    crash's), so that no alert is lost with the process that was to send it."""
    log = tmp_path / "handled.log"
    procs.env["HANDLED_LOG"] = str(log)
    procs.env["BALANCER_POISON_THRESHOLD"] = "2"
    procs.serve()
    worker = procs.worker("--import", "tests.integration.handled_tasks", "--concurrency", "1")
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 1, timeout=30)
    with Flow("dying") as flow:
        handled_tasks.dies_under_its_handler()
    flow.submit(real, namespace=namespace)

    def said() -> list[tuple[str, int]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [(line.rsplit(" pid=", 1)[0], int(line.rsplit("=", 1)[1])) for line in lines]

    wait_for(lambda: len(said()) >= 4, timeout=60)
    time.sleep(0.5)  # a line more would come now
    lines = said()
    died = ("balancer.WorkerProcessDied: the process running task"
            " tests.integration.handled_tasks:dies_under_its_handler died (exit code -9)")
    assert sorted(line for line, _ in lines) == sorted([
        "dies_under_its_handler Pending -> Running None",
        "dies_under_its_handler Pending -> Running None",
        f"dies_under_its_handler Running -> Retrying {died}",
        f"dies_under_its_handler Running -> Failed {died}"])
    runs = [pid for line, pid in lines if line.endswith("Pending -> Running None")]
    told = {pid for line, pid in lines if "Running -> " in line}
    assert not told & set(runs), lines  # the second run's process died before it told
    assert "were not told" not in procs.log(worker)


def test_a_thread_pool_run_stopped_past_its_timeout_is_timed_out_for_its_handlers(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = tmp_path / "handled.log"
    procs.env["HANDLED_LOG"] = str(log)
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.handled_tasks",
                           "--concurrency", "1", "--pool", "thread")
    with Flow("looping") as flow:
        handled_tasks.loops()
    assert flow.run(timeout=60, client=real, namespace=namespace, quiet=True).is_failed()
    wait_for(lambda: "on_failure" in log.read_text(), timeout=20)
    said = ("TimeoutError: task tests.integration.handled_tasks:loops ran past its timeout"
            " of 0.5s and was stopped")
    assert [re.sub(r" pid=\d+$", "", line) for line in log.read_text().splitlines()] == [
        "loops Pending -> Running None", f"loops Running -> TimedOut {said}",
        f"on_failure loops TimedOut {said}"]


def test_a_slow_handler_of_a_thread_pool_run_stopped_past_its_timeout_is_not_cut_off(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """The stopped run's thread is interrupted again every second while it lives: not
    while it calls the run's handlers."""
    log = tmp_path / "handled.log"
    procs.env["HANDLED_LOG"] = str(log)
    worker_args = ("--import", "tests.integration.handled_tasks", "--concurrency", "1",
                   "--pool", "thread")
    procs.serve_and_worker(real, namespace, *worker_args)
    with Flow("alerts-slowly") as flow:
        handled_tasks.loops_then_alerts_slowly()
    assert flow.run(timeout=60, client=real, namespace=namespace, quiet=True).is_failed()
    wait_for(lambda: log.exists() and "slow on_failure" in log.read_text(), timeout=30)
    assert [re.sub(r" pid=\d+$", "", line) for line in log.read_text().splitlines()] == [
        "slow on_failure loops_then_alerts_slowly TimedOut"]
    [worker] = [p for p in procs.procs
                if Path(p.log_path).name.startswith("worker")]  # type: ignore[attr-defined]
    assert "HandlerFailed" not in procs.log(worker) and "TaskInterrupted" not in procs.log(worker)


def test_a_run_completed_from_the_cache_tells_its_handlers_pending_to_cached(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = tmp_path / "handled.log"
    procs.env["HANDLED_LOG"] = str(log)
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.handled_tasks",
                           "--concurrency", "1")
    for _ in range(2):
        with Flow("cached") as flow:
            square = handled_tasks.cached_square(7)
        run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
        assert run.result(square) == 49
    assert [re.sub(r" pid=\d+$", "", line) for line in log.read_text().splitlines()] == [
        "cached_square Pending -> Running None", "cached_square Running -> Success 49",
        "cached_square Pending -> Cached 49"]


def test_a_retry_condition_on_the_worker_retries_only_what_it_says(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.handled_tasks",
                           "--concurrency", "2")
    with Flow("picky") as flow:
        lost = handled_tasks.fetches("connection")
        wrong = handled_tasks.fetches("value")
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.result[lost].is_failed() and run.result[wrong].is_failed()
    keys = Keys(namespace)
    assert real.hget(keys.task(run.ids[lost]), "failures") == b"3"  # retried twice
    assert real.hget(keys.task(run.ids[wrong]), "failures") == b"1"  # not retried


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_retry_condition_is_asked_of_a_run_past_its_timeout(
        procs: Processes, real: redis.Redis, namespace: str, pool: str) -> None:
    """As Prefect 3 asks it of a TimeoutError: it was not asked, and a run past its
    timeout was retried whatever the condition said. A process-pool run's is asked by a
    process of the pool (worker.askretry) before the supervisor settles the run."""
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.handled_tasks",
                           "--concurrency", "2", "--pool", pool)
    with Flow("overruns") as flow:
        retried = handled_tasks.overruns_retried()
        refused = handled_tasks.overruns_not_retried()
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.result[retried].is_failed() and run.result[refused].is_failed()
    keys = Keys(namespace)
    assert real.hget(keys.task(run.ids[retried]), "failures") == b"3"  # retried twice
    assert real.hget(keys.task(run.ids[refused]), "failures") == b"1"  # not retried
    assert b"TimeoutError" in real.hget(keys.task(run.ids[refused]), "error")
