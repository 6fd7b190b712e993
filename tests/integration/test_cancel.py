"""Cancelling a flow run on a real cluster: `balancer serve` and `worker start` processes.

A running process-pool task is killed with its child (which is replaced), its queued
dependents never start, another flow running beside it completes untouched, a second
cancel changes nothing, and a cancel racing the ack leaves one consistent state. A
thread-pool task is abandoned and its late result refused."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid

import redis
from balancer.common.keys import Keys

from balancer import Flow, FlowRun
from bench.reap import ended
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks


def _registered(real: redis.Redis, keys: Keys, n: int) -> None:
    wait_for(lambda: real.zcard(keys.workers) >= n, timeout=60)


def _waiter(run: FlowRun) -> tuple[threading.Thread, list[str]]:
    """A client blocked in run.wait(), as another process's flow.run() would be."""
    out: list[str] = []
    thread = threading.Thread(target=lambda: out.append(run.wait(timeout=60)), daemon=True)
    thread.start()
    return thread, out


def _counts_add_up(real: redis.Redis, keys: Keys, run: FlowRun) -> dict[str, str]:
    states = run.states()
    flow = {k.decode(): v.decode(errors="replace")
            for k, v in real.hgetall(keys.flow(run.id)).items()}
    assert flow["remaining"] == "0"
    assert int(flow.get("cancelled", 0)) == sum(s == "cancelled" for s in states.values())
    assert int(flow["failed"]) == sum(s in ("failed", "upstream_failed")
                                      for s in states.values())
    assert sum(s in ("completed", "cancelled", "failed", "upstream_failed")
               for s in states.values()) == int(flow["total"])
    return states


def test_cancel_kills_the_running_task_skips_its_dependents_and_spares_another_flow(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "process")
    _registered(real, keys, 1)
    tag = uuid.uuid4().hex[:8]
    pids, starts = f"{namespace}:pids-{tag}", f"{namespace}:starts-{tag}"
    other, gate = f"{namespace}:other-{tag}", f"{namespace}:gate-{tag}"
    try:
        with Flow("doomed") as doomed:
            long = tasks.note_pid_and_sleep(redis_url, pids, 30)
            tasks.note_start(redis_url, starts, upstream_tasks=[long])
            tasks.note_start(redis_url, starts, upstream_tasks=[long])
        with Flow("bystander") as bystander:
            gated = tasks.note_then_wait_for_gate(redis_url, other, gate, 60)
            after = tasks.add(1, 2, upstream_tasks=[gated])
        run = doomed.submit(real, namespace=namespace)
        spared = bystander.submit(real, namespace=namespace)
        popped = real.blpop([pids], timeout=60)
        assert popped is not None, "the long task never started"
        pid = int(popped[1])
        assert real.blpop([other], timeout=60) is not None, "the other flow never started"
        waiter, final = _waiter(run)

        done = run.cancel()

        assert (done.state, done.cancelled) == ("cancelled", 3)
        wait_for(lambda: ended(pid), timeout=20)  # killed at once; polled generously
        waiter.join(30)
        assert final == ["cancelled"], "the waiting client did not wake with the final state"
        assert run.wait(timeout=5) == "cancelled" and run.is_cancelled()
        assert set(_counts_add_up(real, keys, run).values()) == {"cancelled"}
        # The other flow runs on, on the same worker, and completes.
        assert spared.state == "running"
        real.rpush(gate, 1)
        assert spared.wait(timeout=60) == "completed"
        assert spared.result(after) == 3
        # The dependents never started, and the worker goes on (its child replaced).
        with Flow("after") as later:
            node = tasks.whoami()
        again = later.submit(real, namespace=namespace)
        assert again.wait(timeout=60) == "completed"
        assert again.result(node) != pid
        assert real.llen(starts) == 0
        assert worker.poll() is None
        # A second cancel changes nothing, from the API or the CLI.
        before = real.hgetall(keys.flow(run.id))
        assert run.cancel().cancelled == 0
        cli = subprocess.run([sys.executable, "-m", "balancer.cli", "flow", "cancel", run.id],
                             cwd=ROOT, env=procs.env, capture_output=True, text=True,
                             timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert "already cancelled" in cli.stdout
        assert real.hgetall(keys.flow(run.id)) == before
        assert "killing pid=" in procs.log(worker)
    finally:
        real.delete(pids, starts, other, gate)


def test_a_cancel_racing_the_ack_leaves_one_consistent_state(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--concurrency", "2", "--pool", "process")
    procs.worker("--concurrency", "2", "--pool", "thread")
    _registered(real, keys, 2)
    rng = random.Random(14)
    outcomes = set()
    runs = []
    for i in range(16):
        with Flow(f"race-{i}") as flow:
            first = tasks.sleep_for(rng.uniform(0, 0.05))
            tasks.add(1, 2, upstream_tasks=[first])
        run = flow.submit(real, namespace=namespace)
        waiter, final = _waiter(run)
        time.sleep(rng.uniform(0, 0.08))
        done = run.cancel()
        waiter.join(60)
        assert final == [done.state] == [run.state], (i, final, done)
        runs.append(run)
        states = _counts_add_up(real, keys, run)
        a, b = states["sleep_for"], states["add"]
        if done.state == "completed":
            assert done.cancelled == 0 and (a, b) == ("completed", "completed")
        else:
            assert done.state == "cancelled" and b == "cancelled"
            assert a in ("completed", "cancelled")
            assert done.cancelled == (1 if a == "completed" else 2)
        outcomes.add((done.state, a, b))
    # Late acks of cancelled leases (refused) change nothing afterwards.
    time.sleep(0.5)
    for run in runs:
        before = run.states()
        _counts_add_up(real, keys, run)
        assert run.states() == before
    assert outcomes, "no flow was cancelled"


def test_the_thread_pool_abandons_a_cancelled_task_and_refuses_its_late_result(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "1", "--pool", "thread")
    _registered(real, keys, 1)
    tag = uuid.uuid4().hex[:8]
    started, gate = f"{namespace}:started-{tag}", f"{namespace}:gate-{tag}"
    try:
        with Flow("abandoned") as flow:
            node = tasks.note_then_wait_for_gate(redis_url, started, gate, 60)
        run = flow.submit(real, namespace=namespace)
        assert real.blpop([started], timeout=60) is not None
        assert run.cancel().cancelled == 1
        # The only slot is free again while the abandoned task still runs.
        with Flow("next") as after:
            value = tasks.add(2, 3)
        nxt = after.submit(real, namespace=namespace)
        assert nxt.wait(timeout=60) == "completed" and nxt.result(value) == 5
        real.rpush(gate, 1)  # the abandoned task returns now: its ack is refused
        task_id = run.ids[run.flow.node_of(tasks.note_then_wait_for_gate)]  # type: ignore[union-attr]
        wait_for(lambda: f"task={task_id} lease=" in procs.log(worker)
                 and "outcome refused" in procs.log(worker), timeout=30)
        assert run.task_state(node) == "cancelled" and run.state == "cancelled"
        assert worker.poll() is None
    finally:
        real.delete(started, gate)
