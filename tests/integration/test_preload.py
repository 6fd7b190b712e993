"""A process pool imports the worker's --import modules once, in the forkserver its
processes are forked from (itself forked from the supervisor), so that they share what the
modules load; with --no-preload (or BALANCER_PRELOAD_TASKS=0) each pool process imports
them itself."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import Processes, wait_for
from tests.integration import preloaded_tasks, recorded_imports, threaded_tasks

pytestmark = pytest.mark.integration

CALLS = 6


def _importers(procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path,
               *worker_args: str) -> tuple[int, set[int], int]:
    """The worker's pid, the pids that imported its --import module, the pid that ran a
    task of it."""
    record = tmp_path / "imports"
    procs.env["RECORD_IMPORTS_TO"] = str(record)
    procs.serve()
    worker = procs.worker("--import", "tests.integration.recorded_imports", *worker_args)
    with Flow("importers") as flow:
        call = recorded_imports.pid()
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.is_successful()
    return worker.pid, {int(line) for line in record.read_text().split()}, run.result(call)


def _where(procs: Processes, real: redis.Redis, namespace: str, *worker_args: str,
           module: str = "tests.integration.preloaded_tasks") -> tuple[int, list[list[int]]]:
    """The worker's pid, and [importer, runner] of each call."""
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--import", module, *worker_args)
    with Flow("where") as flow:
        calls = [preloaded_tasks.where(i) for i in range(CALLS)]
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.is_successful()
    return worker.pid, [run.result(c) for c in calls]


def test_the_pool_processes_share_task_modules_imported_once_before_they_were_forked(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    supervisor, pids = _where(procs, real, namespace)
    [importer] = {imported for imported, _ in pids}
    assert all(runner != importer for _, runner in pids)  # imported before the fork
    assert importer != supervisor  # by the forkserver, which forks the pool processes


@pytest.mark.parametrize("slots", ["1", "2"])
def test_a_process_pools_supervisor_leaves_the_task_modules_to_its_pool_processes(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path,
        slots: str) -> None:
    """It runs no task: what a task module loads (a model, a large library) held there
    too was its memory once more, for nothing. The forkserver the pool processes are
    forked from imports it, for one slot as for two."""
    supervisor, importers, runner = _importers(procs, real, namespace, tmp_path,
                                               "--concurrency", slots)
    assert supervisor not in importers and runner not in importers
    assert len(importers) == 1


@pytest.mark.parametrize("slots", ["1", "2"])
def test_the_pool_processes_forkserver_is_forked_from_the_supervisor(
        procs: Processes, real: redis.Redis, namespace: str, slots: str) -> None:
    """Forked, not started as a new interpreter (``python -c 'from
    multiprocessing.forkserver import main ...'``): it shares the supervisor's memory,
    which holds the same modules, and so do the pool processes it forks; a single slot is
    forked from it too, not spawned. Its only other process, multiprocessing's resource
    tracker, is forked from it as well."""
    procs.serve()
    worker = procs.worker("--concurrency", slots)
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 1, timeout=30)
    supervisor = psutil.Process(worker.pid)
    servers = [p for p in supervisor.children() if p.children()]
    assert len(servers) == 1, [p.cmdline() for p in supervisor.children()]
    assert servers[0].cmdline() == supervisor.cmdline()  # a fork of it, not an exec
    # The pool processes, and multiprocessing's resource tracker, forked from it too.
    assert len(servers[0].children()) == int(slots) + 1
    assert all(p.cmdline() == supervisor.cmdline() for p in servers[0].children())
    procs.stop(worker)
    wait_for(lambda: not servers[0].is_running() or servers[0].status() == "zombie",
             timeout=10)  # it ends with the supervisor


def test_a_killed_forkserver_takes_its_pool_processes_and_new_ones_serve_from_a_new_one(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """The kernel's OOM killer may pick the forkserver: its pool processes die with it
    (their PR_SET_PDEATHSIG), and their replacements come from a forkserver that
    multiprocessing starts anew (a new interpreter now: the supervisor runs threads),
    which imports the task modules again; the worker serves on."""
    record = tmp_path / "imports"
    procs.env["RECORD_IMPORTS_TO"] = str(record)
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--import", "tests.integration.recorded_imports")
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 1, timeout=30)
    supervisor = psutil.Process(worker.pid)
    [forked] = supervisor.children()
    pool = {p.pid for p in forked.children()}
    forked.kill()
    # Both pool processes are told as deaths, and replaced.
    wait_for(lambda: procs.log(worker).count("died (exit code") >= 2, timeout=30)
    with Flow("after") as flow:
        call = recorded_imports.pid()
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.is_successful()
    runner = psutil.Process(run.result(call))
    assert runner.pid not in pool
    server = runner.parent()
    assert server is not None and server.ppid() == worker.pid and server.pid != forked.pid
    assert "multiprocessing.forkserver" in " ".join(server.cmdline())
    assert [int(line) for line in record.read_text().split()] == [forked.pid, server.pid]
    assert worker.poll() is None


@pytest.mark.parametrize("preload", [True, False])
def test_a_task_module_that_starts_a_thread_at_import_is_said_unless_each_imports_it(
        procs: Processes, real: redis.Redis, namespace: str, preload: bool) -> None:
    """Forked from the process that imported it, a pool process runs the module's tasks
    without its thread: the log says so, and how to have one in each pool process."""
    procs.serve()
    worker = procs.worker("--import", "tests.integration.threaded_tasks",
                          *(() if preload else ("--no-preload",)))
    with Flow("threaded") as flow:
        call = threaded_tasks.keeper_alive()
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.result(call) is not preload
    said = "the --import modules started threads at import (keeper)"
    assert (said in procs.log(worker)) is preload
    assert "--no-preload" in procs.log(worker) or not preload


def test_a_thread_pools_supervisor_imports_the_task_modules_its_slots_run(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    supervisor, importers, runner = _importers(procs, real, namespace, tmp_path,
                                               "--pool", "thread")
    assert importers == {supervisor} and runner == supervisor


def test_the_forkserver_does_once_what_each_pool_process_would_do_first(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """multiprocessing runs the worker's main module (its command) again in each pool
    process, and each one connects: what the command imports (click, the supervisor),
    redis-py's version read from its package's metadata and the IDNA codec are the
    forkserver's, done before it imported the task modules, and shared."""
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--import",
                          "tests.integration.preloaded_tasks")
    with Flow("prepared") as flow:
        call = preloaded_tasks.prepared()
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.is_successful()
    importer, runner, prepared = run.result(call)
    assert importer != runner  # the forkserver imported the task module, after:
    assert prepared == {"command": True, "redis version": True, "idna": True}
    # The command (python -m balancer.worker.cli) run again in each pool process is not
    # the forkserver's module: runpy would warn of it in every pool process's log.
    assert "RuntimeWarning" not in procs.log(worker)


@pytest.mark.parametrize("switch", ["--no-preload", "BALANCER_PRELOAD_TASKS=0"])
def test_without_preload_each_pool_process_imports_the_task_modules_itself(
        procs: Processes, real: redis.Redis, namespace: str, switch: str) -> None:
    if "=" in switch:
        variable, value = switch.split("=")
        procs.env[variable] = value
        args: tuple[str, ...] = ()
    else:
        args = (switch,)
    _, pids = _where(procs, real, namespace, *args)
    assert all(importer == runner for importer, runner in pids)


def test_a_task_module_that_fails_in_the_forkserver_is_imported_by_each_pool_process(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """The forkserver goes on past a module that raises there (multiprocessing's own
    preload would die of it, and no pool process would start); each pool process then
    imports the module itself, as without a preload, and runs its tasks."""
    _, pids = _where(procs, real, namespace,
                     module="tests.integration.forkserver_refused_tasks")
    assert all(importer == runner for importer, runner in pids)
