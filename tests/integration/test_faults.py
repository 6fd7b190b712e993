"""Fault injection with real processes and a real Redis: poison tasks, fencing of late
acks, the timeout backstop, dispatcher death, standby take-over, Redis restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, FlowLost
from tests.conftest import ROOT, Processes, RedisServer, wait_for
from tests.integration import tasks


def _cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=30)


def _workers(client: redis.Redis, keys: Keys, n: int) -> None:
    wait_for(lambda: client.zcard(keys.workers) >= n, timeout=30)


def test_a_task_killing_its_pool_process_is_quarantined_and_can_be_retried(
    procs: Processes, real: redis.Redis, namespace: str, redis_url: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "1", "--pool", "process")
    _workers(real, keys, 1)
    guard = f"guard-{namespace}"
    with Flow("poison") as flow:
        poison = tasks.crash_unless(redis_url, guard)
        after = tasks.constant(poison)
        fine = tasks.constant(1)
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: run.task_state(poison) == "dead", timeout=60)
    wait_for(lambda: run.task_state(fine) == "completed", timeout=30)  # the fleet kept working
    assert run.result(fine) == 1
    assert worker.poll() is None  # the supervisor survived three crashed children
    assert run.state == "running"  # the flow waits for an operator's decision
    listing = _cli(procs, "dlq", "ls", "--json")
    (entry,) = json.loads(listing.stdout)
    assert entry["id"] == run.ids[poison] and entry["lost"] == 3
    assert "WorkerProcessDied" in entry["reason"]
    status = json.loads(_cli(procs, "status", "--json").stdout)
    assert status["dead_letters"] == 1

    real.set(guard, 1)
    try:
        assert _cli(procs, "dlq", "retry", run.ids[poison]).returncode == 0
        assert run.wait(timeout=30) == "completed"
        assert run.result(after) == "survived"
    finally:
        real.delete(guard)


def test_purging_a_quarantined_task_fails_it_and_its_dependents(
    procs: Processes, real: redis.Redis, namespace: str, redis_url: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--concurrency", "1", "--pool", "process")
    _workers(real, keys, 1)
    with Flow("purged") as flow:
        poison = tasks.crash_unless(redis_url, f"never-{namespace}")
        after = tasks.constant(poison)
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: run.task_state(poison) == "dead", timeout=60)
    assert _cli(procs, "dlq", "purge", "--all").returncode == 0
    assert run.wait(timeout=30) == "failed"
    assert run.task_state(poison) == "failed"
    assert run.task_state(after) == "upstream_failed"
    assert real.zcard(keys.dlq) == 0


def test_a_task_that_kills_whole_workers_is_quarantined_after_three(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    flow = Flow("killer")
    killer = flow.add_task(tasks.kill_my_worker)
    run = flow.submit(real, namespace=namespace)
    task_key = keys.task(run.ids[killer])
    for n in range(3):
        victim = procs.worker("--concurrency", "1", "--pool", "thread", "--name", f"victim{n}")
        assert victim.wait(30) == -signal.SIGKILL
        # Reaped: the loss is counted before the next worker may take the task.
        wait_for(lambda n=n: int(real.hget(task_key, "lost") or 0) == n + 1, timeout=30)
    assert run.task_state(killer) == "dead"
    assert int(real.hget(keys.task(run.ids[killer]), "lost")) == 3


def test_a_late_ack_from_a_paused_worker_is_refused(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    paused = procs.worker("--concurrency", "1", "--pool", "thread", "--name", "paused")
    _workers(real, keys, 1)
    flow = Flow("fenced")
    slow = flow.add_task(tasks.sleep_for)
    slow.args = (2.0,)
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: run.task_state(slow) == "running", timeout=20)
    paused.send_signal(signal.SIGSTOP)
    try:
        # Declared dead after the 2 s worker timeout; the task goes to the other worker.
        procs.worker("--concurrency", "1", "--pool", "thread", "--name", "healthy")
        wait_for(lambda: real.hget(keys.task(run.ids[slow]), "worker") == b"healthy",
                 timeout=30)
    finally:
        paused.send_signal(signal.SIGCONT)
    assert run.wait(timeout=30) == "completed"
    wait_for(lambda: "outcome refused" in procs.log(paused), timeout=30)
    wait_for(lambda: "registered again" in procs.log(paused), timeout=30)
    record = real.hmget(keys.task(run.ids[slow]), ["worker", "lost", "state"])
    assert record == [b"healthy", b"1", b"completed"]
    assert run.wait(timeout=5) == "completed"  # the refused ack changed nothing


def test_dispatcher_killed_and_restarted_loses_and_duplicates_nothing(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    serve = procs.serve()
    workers = [procs.worker("--concurrency", "2", "--pool", "thread", "--log-level", "DEBUG")
               for _ in range(2)]
    _workers(real, keys, 2)
    with Flow("restarts") as flow:
        layer = [tasks.sleep_for(0.02) for _ in range(60)]
        sums = [tasks.add(layer[i], layer[i + 1]) for i in range(0, 60, 2)]
    run = flow.submit(real, namespace=namespace)
    for _ in range(3):
        time.sleep(0.3)
        serve.send_signal(signal.SIGKILL)
        serve.wait(5)
        time.sleep(0.3)  # workers keep running what they hold meanwhile
        serve = procs.serve()
    assert run.wait(timeout=60) == "completed"
    assert all(run.result(s) == 0.04 for s in sums)
    logs = "".join(procs.log(w) for w in workers)
    lines = logs.splitlines()
    started = [sum(f"task={t} " in line and " started on " in line for line in lines)
               for t in run.ids.values()]
    assert started == [1] * len(run.ids)  # no worker died: every task ran exactly once
    assert real.zcard(keys.queue("default")) == 0


def test_a_standby_dispatcher_takes_over_when_the_leader_dies(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    first = procs.serve()
    leader = wait_for(lambda: real.get(keys.leader), timeout=20).decode()
    second = procs.serve()
    procs.worker("--concurrency", "2", "--pool", "thread")
    _workers(real, keys, 1)
    time.sleep(0.5)
    assert real.get(keys.leader).decode() == leader  # the standby waits
    # The operator sees who would take over (and the leader is not listed as a standby).
    shown = wait_for(lambda: json.loads(_cli(procs, "status", "--json").stdout)["standbys"],
                     timeout=20)
    assert len(shown) == 1 and shown[0]["id"] != leader.split("|", 1)[1]
    assert f"standby dispatchers: {shown[0]['id']} (seen" in _cli(procs, "status").stdout
    first.send_signal(signal.SIGKILL)
    first.wait(5)
    new = wait_for(lambda: (v := real.get(keys.leader)) and v.decode() != leader and v,
                   timeout=30).decode()
    assert int(new.split("|")[0]) > int(leader.split("|")[0])  # a new epoch
    flow = Flow("after-takeover")
    node = flow.add_task(tasks.whoami)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=30) == "completed"
    assert isinstance(run.result(node), int)
    status = json.loads(_cli(procs, "status", "--json").stdout)
    assert status["leader"] == new
    assert new.split("|", 1)[1] == shown[0]["id"]  # the standby it showed took over
    assert all(row["id"] != shown[0]["id"] for row in status["standbys"])
    assert second.poll() is None


def test_work_resumes_after_redis_restarts_and_aof_keeps_submitted_flows(
    procs: Processes, namespace: str
) -> None:
    server = RedisServer("--appendonly", "yes", "--appendfsync", "everysec").start()
    try:
        procs.env["BALANCER_REDIS_URL"] = server.url
        client = redis.Redis.from_url(server.url)
        keys = Keys(namespace)
        procs.serve()
        worker = procs.worker("--concurrency", "2", "--pool", "thread")
        _workers(client, keys, 1)
        with Flow("outage") as flow:
            first = [tasks.sleep_for(0.3) for _ in range(4)]
            second = [tasks.add(f, 1) for f in first]
        run = flow.submit(client, namespace=namespace)
        wait_for(lambda: any(run.task_state(f) == "running" for f in first), timeout=20)
        time.sleep(1.2)  # let everysec fsync what was written
        server.stop(kill=True)  # Redis dies mid-run, without a clean shutdown
        time.sleep(1.0)
        server.start()
        assert run.wait(timeout=60) == "completed"
        assert [run.result(s) for s in second] == [1.3] * 4
        assert worker.poll() is None
        assert "cannot" in procs.log(worker) or "Redis" in procs.log(worker)
    finally:
        server.cleanup()


def test_a_redis_that_loses_its_data_mid_run_has_the_run_reported_lost_and_serves_the_next(
    procs: Processes, namespace: str
) -> None:
    """Redis restarted without persistence under a running flow: the client waiting on it
    is told the run is lost and why (not a hang, not a failover alone), the worker that ran
    its task registers again and has its late result refused (logged), and the next flow
    completes on the same processes."""
    server = RedisServer().start()  # no persistence: a restart loses every key
    try:
        procs.env["BALANCER_REDIS_URL"] = server.url
        client = redis.Redis.from_url(server.url)
        keys = Keys(namespace)
        serve = procs.serve()
        worker = procs.worker("--concurrency", "1", "--pool", "process")
        _workers(client, keys, 1)
        with Flow("wiped") as flow:
            slow = tasks.sleep_for(3.0)
        run = flow.submit(client, namespace=namespace)
        wait_for(lambda: run.task_state(slow) == "running", timeout=30)
        server.stop(kill=True)
        server.start()
        with pytest.raises(FlowLost, match=r"Redis lost its data \(restarted without persis"):
            run.wait(timeout=60)
        wait_for(lambda: "outcome refused" in procs.log(worker), timeout=30)
        with Flow("after") as flow:
            one = tasks.add(1, 1)
        after = flow.submit(client, namespace=namespace)
        assert after.wait(timeout=60) == "completed" and after.result(one) == 2
        assert worker.poll() is None and serve.poll() is None
        assert "registered again" in procs.log(worker)
    finally:
        server.cleanup()
