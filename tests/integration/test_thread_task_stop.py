"""A thread-pool task the worker gives up on (past its timeout, or its run cancelled) is
stopped in its thread, on a real cluster: a loop in Python would otherwise run on for
good, taking CPU from every other slot of its worker, one more thread per timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import psutil
import redis
from balancer.common.keys import Keys

from balancer import Flow, FlowRun, Node, Task
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks


def _spinning(procs: Processes, real: redis.Redis, redis_url: str, namespace: str,
              spin: Task) -> tuple[subprocess.Popen[bytes], int, str, FlowRun, Node]:
    """Serve and a one-slot thread worker; its thread count once a first task ran (its
    threads all started); then a run of ``spin``, noting on the key returned."""
    procs.serve()
    worker = procs.worker("--concurrency", "1", "--pool", "thread")
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 1, timeout=60)
    with Flow("warm") as warm:
        tasks.add(1, 1)
    assert warm.submit(real, namespace=namespace).wait(timeout=60) == "completed"
    threads = psutil.Process(worker.pid).num_threads()
    key = f"{namespace}:spin-{uuid.uuid4().hex[:8]}"
    with Flow("spins") as flow:
        node = spin(redis_url, key)
    return worker, threads, key, flow.submit(real, namespace=namespace), node


def test_a_thread_pool_task_spinning_past_its_timeout_is_stopped_and_the_worker_goes_on(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    worker, threads, key, run, node = _spinning(procs, real, redis_url, namespace,
                                                tasks.spin_noting_past_1s)
    assert run.wait(timeout=60) == "failed"
    error = run.error(node)
    assert error is not None and error.type == "TimeoutError"
    assert "was stopped" in error.message
    assert real.lrange(key, 0, -1) == [b"started", b"TaskInterrupted"]
    wait_for(lambda: psutil.Process(worker.pid).num_threads() <= threads, timeout=20)
    with Flow("next") as after:
        value = tasks.add(2, 3)
    nxt = after.submit(real, namespace=namespace)
    assert nxt.wait(timeout=60) == "completed" and nxt.result(value) == 5
    assert worker.poll() is None


def test_a_cancelled_thread_pool_task_spinning_in_python_is_stopped(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    worker, threads, key, run, node = _spinning(procs, real, redis_url, namespace,
                                                tasks.spin_noting)
    wait_for(lambda: real.lindex(key, 0) == b"started", timeout=60)
    assert run.cancel().cancelled == 1
    wait_for(lambda: real.lrange(key, 0, -1) == [b"started", b"TaskInterrupted"], timeout=20)
    assert run.wait(timeout=60) == "cancelled" and run.task_state(node) == "cancelled"
    wait_for(lambda: psutil.Process(worker.pid).num_threads() <= threads, timeout=20)
    assert "unexpected error" not in procs.log(worker)
    assert worker.poll() is None


def test_a_thread_that_does_not_stop_is_counted_in_the_workers_status(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """A task inside a call that does not return to Python (a long sleep here) cannot be
    stopped: its worker reports it in its heartbeat, and `balancer status` shows it, until
    it ends."""
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "thread")  # 1 stuck: it goes on
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 1, timeout=60)
    with Flow("sleeps") as flow:
        tasks.hangs()  # sleeps 60 s, timeout 0.5 s
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "failed"

    def status(*options: str) -> str:
        return subprocess.run([sys.executable, "-m", "balancer.cli", "status", *options],
                              cwd=ROOT, env=procs.env, capture_output=True, text=True,
                              timeout=30).stdout

    wait_for(lambda: [w["stuck"] for w in json.loads(status("--json"))["workers"]] == [1],
             timeout=20)
    assert "(stuck task threads: 1)" in status()
    assert "does not stop" in procs.log(worker)


def test_a_worker_with_as_many_stuck_threads_as_slots_stops_to_be_started_afresh(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """Two slots, two tasks stuck in calls that do not return: the worker stops as on
    SIGTERM and exits 1 saying why, deregistered; a worker started afresh serves on."""
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "thread", "--name", "stuck-w1")
    wait_for(lambda: real.zcard(keys.workers) >= 1, timeout=60)
    with Flow("two-hang") as flow:
        tasks.hangs()
        tasks.hangs()
    hung = flow.submit(real, namespace=namespace)
    assert hung.wait(timeout=60) == "failed"
    assert worker.wait(timeout=60) == 1
    log = procs.log(worker)
    assert "2 task threads do not stop, as many as its slots" in log
    assert "stopped: 2 task threads it gave up on do not stop" in log
    assert real.zcard(keys.workers) == 0  # deregistered, nothing left behind
    procs.worker("--concurrency", "2", "--pool", "thread", "--name", "fresh-w1")
    with Flow("after") as flow:
        tasks.constant(3)
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
