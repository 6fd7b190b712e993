"""One fault never takes the cluster down, and a fresh install behaves: error replies from
Redis, an idle worker past its client's socket timeout, a user project with its own
``common`` package. Real processes on a real Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest
import redis
from balancer.common import codec
from balancer.common.keys import Keys

from balancer import Flow, task
from bench.reap import wait_ended
from bench.redis_servers import answers
from tests.conftest import ROOT, Processes, RedisServer, wait_for
from tests.integration import tasks


def _workers(client: redis.Redis, keys: Keys, n: int) -> None:
    wait_for(lambda: client.zcard(keys.workers) >= n, timeout=30)


@contextlib.contextmanager
def _redis_of_our_own(procs: Processes, namespace: str) -> Iterator[tuple[redis.Redis, Keys]]:
    """A private redis-server that refuses writes when full (``maxmemory`` set by the
    test), the processes pointed at it; its client and the namespace's keys."""
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    try:
        procs.env["BALANCER_REDIS_URL"] = server.url
        yield redis.Redis.from_url(server.url), Keys(namespace)
    finally:
        server.cleanup()


def _a_flow_completes(client: redis.Redis, namespace: str, name: str) -> None:
    """A flow of eight tasks, submitted now, completes: the cluster serves again."""
    with Flow(name) as flow:
        nodes = [tasks.whoami() for _ in range(8)]
    run = flow.submit(client, namespace=namespace)
    assert run.wait(timeout=60) == "completed"
    assert all(isinstance(run.result(n), int) for n in nodes)


def _pool_worker(procs: Processes, real: redis.Redis, namespace: str, *args: str
                 ) -> subprocess.Popen[bytes]:
    """`balancer serve` and one process-pool worker started with ``args``, registered."""
    procs.serve()
    worker = procs.worker("--pool", "process", *args)
    _workers(real, Keys(namespace), 1)
    return worker


def test_a_worker_started_while_redis_refuses_writes_registers_once_it_takes_them(
    procs: Processes, namespace: str
) -> None:
    """Started while Redis refuses its first heartbeat (out of memory here; its
    connections at maxclients, or loading after a restart, alike), a worker waited for
    nobody: it died with a traceback, its pool children left behind it."""
    with _redis_of_our_own(procs, namespace) as (client, keys):
        procs.serve()
        wait_for(lambda: client.get(keys.leader), timeout=30)
        client.config_set("maxmemory", "1")  # every write is refused with OOM
        try:
            worker = procs.worker("--pool", "process", "--concurrency", "2")
            wait_for(lambda: "cannot register yet" in procs.log(worker), timeout=30)
            time.sleep(1)
            assert worker.poll() is None and client.zcard(keys.workers) == 0
        finally:
            client.config_set("maxmemory", "0")
        _workers(client, keys, 1)
        with Flow("registered-late") as flow:
            tasks.constant(1)
        assert flow.submit(client, namespace=namespace).wait(timeout=60) == "completed"
        log = procs.log(worker)
        assert log.count("cannot register yet") == 1 and "could register" in log, log
        assert "Traceback" not in log, log


def test_a_worker_stopped_while_waiting_to_register_leaves_no_process_nor_record(
    procs: Processes, namespace: str
) -> None:
    with _redis_of_our_own(procs, namespace) as (client, keys):
        client.config_set("maxmemory", "1")
        worker = procs.worker("--pool", "process", "--concurrency", "2")
        wait_for(lambda: "cannot register yet" in procs.log(worker), timeout=30)
        children = psutil.Process(worker.pid).children(recursive=True)
        assert children
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert not wait_ended(children, timeout=10)
        client.config_set("maxmemory", "0")
        assert client.zcard(keys.workers) == 0
        assert not client.keys(keys.worker("*"))


def test_a_worker_beating_slower_than_its_dispatcher_expects_is_never_called_dead(
    procs: Processes, real: redis.Redis, namespace: str, redis_url: str
) -> None:
    """Started with its own BALANCER_HEARTBEAT_INTERVAL (1 s, and a timeout to match)
    against a dispatcher that beats every 0.2 s and calls a worker dead after 2 s, it was
    reaped between any two beats: its task ran again and again, then was quarantined."""
    serve = procs.serve()
    plain = procs.env
    procs.env = {**plain, "BALANCER_HEARTBEAT_INTERVAL": "1", "BALANCER_WORKER_TIMEOUT": "3"}
    procs.worker("--pool", "process", "--concurrency", "1")
    procs.env = plain
    _workers(real, Keys(namespace), 1)
    key = f"{namespace}:runs"
    with Flow("slow-beats") as flow:
        tasks.note_pid_and_sleep(redis_url, key, 4.0)
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
    assert real.llen(key) == 1  # run once
    log = procs.log(serve)
    assert "reaped" not in log, log
    assert log.count("beats every 1s") == 1, log


def test_a_worker_with_no_dispatcher_says_so_and_says_when_one_leads(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """A worker on another namespace than serve's, or with no serve, waited idle and said
    nothing while its tasks never came."""
    procs.env["BALANCER_LEADER_TTL"] = "0.5"  # patience: three leases, 1.5 s
    worker = procs.worker("--pool", "thread")
    _workers(real, Keys(namespace), 1)
    wait_for(lambda: "no dispatcher has led namespace" in procs.log(worker), timeout=30)
    procs.serve()
    wait_for(lambda: "a dispatcher leads namespace" in procs.log(worker), timeout=30)
    with Flow("led") as flow:
        tasks.constant(1)
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
    assert procs.log(worker).count("no dispatcher has led") == 1


def test_workers_survive_redis_running_out_of_memory_and_register_again(
    procs: Processes, namespace: str
) -> None:
    with _redis_of_our_own(procs, namespace) as (client, keys):
        serve = procs.serve()
        workers = [procs.worker("--concurrency", "1", "--pool", pool, "--name", pool)
                   for pool in ("process", "thread")]
        _workers(client, keys, 2)
        client.config_set("maxmemory", "1")  # every write is refused with OOM
        time.sleep(3 * 2.0 + 1)  # past worker_timeout (2 s) three times over
        client.config_set("maxmemory", "0")

        # Reaped meanwhile or not, both workers are registered again and take work.
        both = {"process", "thread"}
        wait_for(lambda: {w.decode() for w in client.zrange(keys.workers, 0, -1)} == both,
                 timeout=30)
        client.zrem(keys.workers, "thread")  # as the reaper does, while it still runs
        client.delete(keys.worker("thread"))
        wait_for(lambda: client.exists(keys.worker("thread")), timeout=30)
        _a_flow_completes(client, namespace, "after-oom")
        assert serve.poll() is None and all(w.poll() is None for w in workers)
        for worker in workers:
            log = procs.log(worker)
            assert "OutOfMemoryError" in log  # said once per episode, not once per beat
            assert log.count("cannot heartbeat") <= 2, log
            assert "Traceback" not in log, log


def test_a_serve_started_while_redis_is_out_of_memory_waits_and_then_leads(
    procs: Processes, namespace: str
) -> None:
    """It wrote its partition count at start and died of the OOM reply with a traceback
    (a serve started while another's OOM episode lasted, or by a test racing one); it
    waits it out now, said once, as a worker waits to register."""
    with _redis_of_our_own(procs, namespace) as (client, keys):
        client.config_set("maxmemory", "1")  # every write is refused with OOM
        serve = procs.serve()
        wait_for(lambda: "balancer serve cannot start yet" in procs.log(serve), timeout=30)
        time.sleep(1.5)  # a few tries more
        assert serve.poll() is None
        client.config_set("maxmemory", "0")
        procs.worker("--concurrency", "1", "--pool", "thread")
        _workers(client, keys, 1)
        _a_flow_completes(client, namespace, "after-oom-start")
        log = procs.log(serve)
        assert log.count("cannot start yet") == 1 and "balancer serve could start" in log
        assert "Traceback" not in log, log


def test_a_serve_and_a_worker_started_while_redis_loads_its_data_wait_for_it(
    procs: Processes, namespace: str
) -> None:
    """A Redis restarted with its data answers LOADING until it has read it (seconds to
    minutes): a serve or a worker started then (a whole stack restarted at once) exited
    with "cannot reach Redis"; they wait now, said once each. A short-lived command
    (``balancer status``) still says it in one line and exits."""
    server = RedisServer("--enable-debug-command", "yes").start()
    try:
        client = redis.Redis.from_url(server.url)
        client.execute_command("DEBUG", "POPULATE", "100000")
        client.save()
        server.stop()
        # LOADING for ~10 s, answering between keys (every 1 KB read: a large dataset
        # answers every 2 MB)
        server.extra = (*server.extra, "--key-load-delay", "50",
                        "--loading-process-events-interval-bytes", "1024")
        server.start(answering=False)
        procs.env["BALANCER_REDIS_URL"] = server.url
        serve = procs.serve()
        worker = procs.worker("--concurrency", "1")
        status = subprocess.run([sys.executable, "-m", "balancer.cli", "status"], cwd=ROOT,
                                env=procs.env, capture_output=True, text=True, timeout=60)
        for proc in (serve, worker):
            wait_for(lambda p=proc: "cannot serve yet" in procs.log(p), timeout=30)
        assert status.returncode != 0 and "loading the dataset" in status.stderr
        assert serve.poll() is None and worker.poll() is None
        wait_for(lambda: answers(server.url), timeout=120)
        _workers(client, Keys(namespace), 1)
        _a_flow_completes(client, namespace, "after-loading")
        for proc in (serve, worker):
            log = procs.log(proc)
            assert log.count("cannot serve yet") == 1 and "serves now" in log, log
            assert "Traceback" not in log, log
    finally:
        server.cleanup()


def test_an_idle_worker_past_its_socket_timeout_logs_nothing_and_serves_at_once(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """redis-py 8 gives every connection a 5 s socket timeout by default: a worker's
    blocking fetch must not take it for a failure."""
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "process")
    thread_worker = procs.worker("--concurrency", "2", "--pool", "thread")
    _workers(real, keys, 2)
    time.sleep(7)  # idle past redis-py's default 5 s socket timeout
    with Flow("after-idle") as flow:
        node = tasks.constant(7)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=30) == "completed" and run.result(node) == 7
    for w in (worker, thread_worker):
        log = procs.log(w)
        assert "ERROR" not in log and "cannot fetch" not in log, log


PROJECT = {
    "common/__init__.py": "VALUE = 'the project common'\n",
    "worker.py": "raise RuntimeError('the project worker.py must not be imported')\n",
    "jobs.py": """
        import common
        from balancer import task

        @task
        def read_common() -> str:
            return common.VALUE
    """,
}


def test_a_worker_in_a_project_with_its_own_common_package_imports_the_projects(
    procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    for name, text in PROJECT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {k: v for k, v in procs.env.items() if k != "PYTHONPATH"}
    keys = Keys(namespace)
    procs.serve()
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "balancer.worker.cli", "start",
                               "--concurrency", "1", "--pool", "process"],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _workers(real, keys, 1)

        def read_common() -> str:  # named as the project's task, which the test can't import
            raise AssertionError("runs on the worker only")

        read_common.__module__, read_common.__qualname__ = "jobs", "read_common"
        flow = Flow("project")
        node = flow.add_task(task(read_common))
        run = flow.submit(real, namespace=namespace)
        assert run.wait(timeout=30) == "completed", run.error(node)
        assert run.result(node) == "the project common"
    finally:
        worker.terminate()
        worker.wait(15)
        log.close()
    assert "must not be imported" not in (tmp_path / "worker.log").read_text()
    assert os.path.exists(tmp_path / "jobs.py")


def test_an_error_outside_the_tasks_code_counts_toward_quarantine(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """An argument nested 700 deep around an upstream reference breaks the worker's own
    reading of it (RecursionError), not the task: it counts as a crash, and after
    ``poison_threshold`` of them the task is quarantined instead of re-leased for ever."""
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--concurrency", "1", "--pool", "process")
    _workers(real, keys, 1)
    real.hset(keys.queue_conf("default"), "paused", "1")
    with Flow("deep") as flow:
        deep = tasks.constant(1)
        fine = tasks.constant(2)
    run = flow.submit(real, namespace=namespace)
    ref = msgpack.packb(msgpack.ExtType(codec.UPSTREAM_REF, run.ids[fine].encode()))
    real.hset(keys.task(run.ids[deep]), "args", b"\x92" + b"\x91" * 700 + ref + b"\x80")
    real.hset(keys.queue_conf("default"), "paused", "0")
    real.rpush(keys.wake, "q")
    wait_for(lambda: run.task_state(deep) == "dead", timeout=60)
    error = run.error(deep)
    assert error is not None and error.type == "balancer.WorkerError", error
    assert "RecursionError" in error.message
    assert real.hget(keys.task(run.ids[deep]), "lost") == b"3"
    wait_for(lambda: run.task_state(fine) == "completed", timeout=30)  # the rest flows


@pytest.mark.parametrize("slots", [1, 2], ids=["one-child", "two-children"])
def test_sigterm_to_the_whole_process_group_lets_running_tasks_finish(
    procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path, slots: int
) -> None:
    """systemd (KillMode=control-group) and `timeout` signal every process of the
    worker, pool children included: the children must leave stopping to the supervisor,
    which lets the running task finish within its grace period. The children's parent
    is the pool's forkserver, which must outlive the signal too, and so must the resource
    tracker it forked."""
    keys = Keys(namespace)
    procs.serve()
    log = open(tmp_path / "grouped.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "balancer.worker.cli", "start",
                               "--concurrency", str(slots), "--pool", "process"],
                              cwd=ROOT, env=procs.env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        _workers(real, keys, 1)
        with Flow("grouped") as flow:
            node = tasks.sleep_for(1.5)
        run = flow.submit(real, namespace=namespace)
        wait_for(lambda: run.task_state(node) == "running", timeout=30)
        os.killpg(worker.pid, signal.SIGTERM)  # its own session: only what it started
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(5)
        log.close()
    assert run.wait(timeout=30) == "completed" and run.result(node) == 1.5
    assert real.hget(keys.task(run.ids[node]), "lost") is None  # never counted as a crash


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_task_calling_sys_exit_or_raising_keyboard_interrupt_fails_and_its_worker_goes_on(
    procs: Processes, real: redis.Redis, namespace: str, pool: str
) -> None:
    """Neither is an Exception: let through, it ended a thread-pool slot's thread without
    a word (the task "running" for ever, the worker one slot fewer: with one, it ran
    nothing more) and killed a pool child (a crash, run again until quarantined)."""
    keys = Keys(namespace)
    procs.serve_and_worker(real, namespace, "--concurrency", "1", "--pool", pool)
    with Flow("exits") as flow:
        exits = tasks.exits(3)
        interrupts = tasks.interrupts()
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=30) == "failed"
    for node, kind in ((exits, "SystemExit"), (interrupts, "KeyboardInterrupt")):
        error = run.error(node)
        assert run.task_state(node) == "failed" and error is not None and error.type == kind
        assert "a task cannot stop its worker" in error.message
        assert real.hget(keys.task(run.ids[node]), "lost") is None  # no crash counted
    with Flow("after") as after:
        node = tasks.add(1, 2)
    done = after.submit(real, namespace=namespace)
    assert done.wait(timeout=30) == "completed" and done.result(node) == 3


@pytest.mark.parametrize("slots", [1, 2], ids=["one-child", "two-children"])
def test_a_pool_child_stops_with_its_worker_though_a_task_left_a_thread_running(
    procs: Processes, real: redis.Redis, namespace: str, slots: int
) -> None:
    """A thread that is not a daemon holds a process at its exit: the worker would wait
    out its whole grace period for a child with nothing to finish, then kill it and report
    a task still running."""
    procs.env["BALANCER_SHUTDOWN_GRACE"] = "120"
    worker = _pool_worker(procs, real, namespace, "--concurrency", str(slots))
    with Flow("careless") as flow:
        nodes = [tasks.leaves_a_thread_running(600) for _ in range(slots)]
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=30) == "completed"
    assert [run.result(n) for n in nodes] == ["left"] * slots
    children = psutil.Process(worker.pid).children(recursive=True)
    assert procs.stop(worker, timeout=60) == 0  # SIGTERM; killed after 60 s
    assert "after the grace period" not in procs.log(worker)
    assert not wait_ended(children, timeout=10)


@pytest.mark.parametrize("slots", [1, 2], ids=["one-child", "two-children"])
def test_pool_processes_retire_after_max_tasks_per_child_and_fresh_ones_go_on(
    procs: Processes, real: redis.Redis, namespace: str, slots: int
) -> None:
    """Short tasks come in batches: a child never takes a lease past its bound, so that
    none runs more than its bound, and none is handed back or counted as a crash."""
    keys = Keys(namespace)
    worker = _pool_worker(procs, real, namespace, "--concurrency", str(slots),
                          "--max-tasks-per-child", "3")
    for round_ in range(2):  # the second with run times known: batches
        with Flow(f"recycled-{round_}") as flow:
            nodes = [tasks.whoami() for _ in range(15)]
        run = flow.submit(real, namespace=namespace)
        assert run.wait(timeout=60) == "completed"
        pids = [run.result(n) for n in nodes]
        assert max(pids.count(p) for p in set(pids)) <= 3 and len(set(pids)) >= 5
        assert all(real.hget(keys.task(run.ids[n]), "lost") is None for n in nodes)
    log = procs.log(worker)
    assert "retired after 3 tasks (max_tasks_per_child 3); a fresh one takes its place" in log
    # Nothing a retiring child took is handed back (what waits in the inbox behind a run
    # that a loaded host stretched past the prefetch horizon may be: that is scheduling).
    assert "died" not in log and "taken ahead" not in log and "of the batch" not in log
    assert procs.stop(worker) == 0


def test_a_pool_process_over_max_memory_per_child_after_a_task_retires(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    worker = _pool_worker(procs, real, namespace, "--concurrency", "1",
                          "--max-memory-per-child", "300")
    with Flow("leaky") as flow:
        small = tasks.grows(1)
        big = tasks.grows(400)
        big.set_upstream(small)
        after = tasks.whoami()
        after.set_upstream(big)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed"
    assert run.result(small) == run.result(big) != run.result(after)
    log = procs.log(worker)
    assert "over max_memory_per_child 300 MB; a fresh one takes its place" in log
    assert "died" not in log


def test_bounds_on_pool_processes_are_refused_with_a_thread_pool() -> None:
    out = subprocess.run([sys.executable, "-m", "balancer.worker.cli", "start", "--pool",
                          "thread", "--max-tasks-per-child", "5"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "they need --pool process" in out.stderr


def test_pool_processes_retiring_side_by_side_never_look_crashed(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """A forked child's exit code is read from its forkserver's pipe, once; starting a
    child polls every other child too. Unserialized, a watch starting a child while
    another read its own child's end left that one with the pipe's end: exit code 255,
    a crash logged (in 4 runs of 4 of this test before the fix)."""
    worker = _pool_worker(procs, real, namespace, "--concurrency", "2",
                          "--max-tasks-per-child", "1")
    with Flow("churn") as flow:
        nodes = [tasks.whoami() for _ in range(150)]
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=120) == "completed"
    assert len({run.result(n) for n in nodes}) == 150  # each in a process of its own
    # The last children retire after the flow completed: their lines come a moment later.
    wait_for(lambda: procs.log(worker).count("retired after 1 tasks") >= 150, timeout=60)
    assert "died" not in procs.log(worker)


def test_a_pool_process_that_cannot_start_says_why_and_its_worker_exits_non_zero(
        procs: Processes, real: redis.Redis) -> None:
    """The supervisor said only that the process "exited with code 1 on start-up" and to
    look above, where the child's traceback was among the other lines. The module that
    failed is named: the supervisor of a process pool does not import it first."""
    worker = procs.worker("--import", "tests.integration.child_only_broken",
                          "--concurrency", "1", "--no-preload")  # each imports it
    assert worker.wait(timeout=60) != 0
    assert ("its pool process exited with code 1 on start-up: --import"
            " tests.integration.child_only_broken: RuntimeError: this module refuses pool"
            " processes") in procs.log(worker)


def test_workers_and_dispatcher_reach_redis_again_after_more_reconnects_than_their_pool_caps(
    procs: Processes, namespace: str
) -> None:
    """Each connection a process made again for its own calls (the tries to connect while
    Redis was away, those after it came back) counted against its client pool's
    ``max_connections`` (100 by default in redis-py 7 and 8) for good: after that many,
    the process never reached Redis again, its workers gone from the cluster. Here the cap
    is 12, from the URL, and Redis is away for 4 s, then back (empty: it keeps nothing)."""
    server = RedisServer().start()
    try:
        procs.env["BALANCER_REDIS_URL"] = f"{server.url}?max_connections=12"
        client, keys = redis.Redis.from_url(server.url), Keys(namespace)
        serve = procs.serve()
        workers = [procs.worker("--concurrency", "1", "--pool", pool, "--name", pool)
                   for pool in ("process", "thread")]
        _workers(client, keys, 2)
        # The serve too has reached Redis (a serve that cannot reach it at start exits).
        wait_for(lambda: client.exists(keys.leader), timeout=30)
        server.stop()
        time.sleep(4)
        server.start()
        _workers(client, keys, 2)  # registered again
        _a_flow_completes(client, namespace, "after-restart")
        assert serve.poll() is None and all(w.poll() is None for w in workers)
        for process in (serve, *workers):
            assert "Too many connections" not in procs.log(process)
    finally:
        server.cleanup()


def test_a_thread_pool_wider_than_redis_pys_default_pool_cap_runs_every_task(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """250 slots whose tasks read a Variable between waits: on redis-py's default pool
    cap (100 connections since redis-py 7) calls were refused with MaxConnectionsError,
    and tasks failed as if Redis were away (76 of 500 here), their upstream reads logged
    as failures."""
    from tests.integration import io_tasks

    procs.serve()
    worker = procs.worker("--pool", "thread", "--concurrency", "250")
    _workers(real, Keys(namespace), 1)
    with Flow("wide") as flow:
        first = io_tasks.seed()
        outs = [io_tasks.reads_and_waits(first, i) for i in range(500)]
    run = flow.run(timeout=120, client=real, namespace=namespace, quiet=True)
    assert run.state == "completed"
    assert [run.result(o) for o in outs] == [1 + i for i in range(500)]
    assert "Too many connections" not in procs.log(worker)
