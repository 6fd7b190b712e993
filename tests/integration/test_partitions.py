"""Partitions (common/partitions.py, docs/scaling.md): a namespace of 3 partitions, led by
two `balancer serve` processes and served by two workers, as real processes on the real
Redis. Every flow runs in the partition its id names, with every key it touches there; a
serve killed with SIGKILL mid-stream hands its partitions to the other, and no flow is
lost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import redis
from balancer.common import partitions
from balancer.common.keys import Keys

from balancer import Flow
from balancer.run import FlowRun
from bench.reap import ended
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration

COUNT = 3


def _leaders(client: redis.Redis, namespace: str) -> list[str | None]:
    """Each partition's leader: the dispatcher id of its lease, None when free."""
    values = [client.get(Keys(namespace, p).leader) for p in range(COUNT)]
    return [v.decode().split("|", 1)[1] if v else None for v in values]


def _pid(dispatcher_id: str) -> int:
    return int(dispatcher_id.rsplit("-", 2)[1])  # "<host>-<pid>-<random>"


def _cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)


def _flow(i: int) -> Flow:
    """Single tasks and small DAGs (three squares and their total)."""
    with Flow(f"stream-{i}") as flow:
        if i % 3 == 0:
            tasks.total([tasks.square(i), tasks.square(i + 1), tasks.square(i + 2)])
        else:
            tasks.square(i)
    return flow


def _expected(i: int) -> int:
    return sum(j * j for j in range(i, i + 3)) if i % 3 == 0 else i * i


def test_a_stream_of_flows_completes_over_3_partitions_and_2_serves_one_killed_midway(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.env["BALANCER_LEADER_TTL"] = "2"
    procs.env["BALANCER_PARTITIONS"] = str(COUNT)  # the setting, for the first serve
    first = procs.serve()
    wait_for(lambda: real.get(Keys(namespace).partitions) == b"3", timeout=30)
    second = procs.serve("--partitions", str(COUNT))  # the flag, for the second
    for pool in ("process", "thread"):  # both serve every partition
        procs.worker("--pool", pool, "--concurrency", "2")
    wait_for(lambda: all(real.zcard(Keys(namespace, p).workers) >= 2 for p in range(COUNT)),
             timeout=30)
    # Two dispatchers: each leads at most ceil(3 / 2) = 2 partitions, so both lead.
    wait_for(lambda: None not in _leaders(real, namespace)
             and len(set(_leaders(real, namespace))) == 2, timeout=30)
    refused = _cli(procs, "serve", "--partitions", "2")
    assert refused.returncode != 0 and "has 3 partitions" in refused.stderr, refused.stderr

    runs: list[tuple[int, FlowRun]] = []
    stop = threading.Event()

    def submit() -> None:
        i = 0
        while not stop.is_set():
            runs.append((i, _flow(i).submit(real, namespace=namespace)))
            i += 1
            time.sleep(0.03)

    submitter = threading.Thread(target=submit)
    submitter.start()
    try:
        time.sleep(1.5)
        leaders = _leaders(real, namespace)
        led = Counter(_pid(d) for d in leaders if d is not None)
        victim = first if led[first.pid] >= led[second.pid] else second  # leads 2 of 3
        survivor = second if victim is first else first
        led_by_victim = [p for p, d in enumerate(leaders) if d and _pid(d) == victim.pid]
        victim.kill()  # SIGKILL: no lease is given back
        killed_at = time.monotonic()
        wait_for(lambda: {_pid(d) if d else None for d in _leaders(real, namespace)}
                 == {survivor.pid}, timeout=30)
        took = time.monotonic() - killed_at
        time.sleep(1.0)  # the stream goes on, all on the survivor
    finally:
        stop.set()
        submitter.join()
    print(f"\npartitions {led_by_victim} of the killed serve led by the other after"
          f" {took:.2f}s; {len(runs)} flows submitted")

    for i, run in runs:
        assert run.wait(timeout=60) == "completed", (i, run.id)
        assert run.results()["total" if i % 3 == 0 else "square"] == _expected(i)
    placed = {partitions.of_flow(run.id) for _, run in runs}
    assert placed == set(range(COUNT))
    ran_on = {(partitions.of_flow(run.id), real.hget(
        Keys(namespace, partitions.of_flow(run.id)).task(t), "worker"))
        for _, run in runs for t in run.task_ids}
    assert len({w for _, w in ran_on}) == 2  # the process pool and the thread pool
    assert {p for p, _ in ran_on} == set(range(COUNT))
    for _, run in runs:  # everything the flow touched is in its own partition
        home = partitions.of_flow(run.id)
        for p in range(COUNT):
            keys = Keys(namespace, p)
            held = [real.exists(keys.task(t)) for t in run.task_ids]
            assert all(held) if p == home else not any(held), (run.id, p)
            assert bool(real.exists(keys.flow(run.id))) == (p == home)
            assert bool(real.exists(keys.flow_done(run.id))) == (p == home)

    # The CLI finds a flow of any partition by its id, and lists those of every one.
    late = next(run for _, run in reversed(runs) if partitions.of_flow(run.id) > 0)
    shown = _cli(procs, "flow", late.id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "completed"
    listed = _cli(procs, "flows", "-n", "30", "--json")
    assert {partitions.of_flow(r["id"]) for r in json.loads(listed.stdout)} == set(range(COUNT))
    status = _cli(procs, "status")
    assert status.returncode == 0 and "leader of partition 2:" in status.stdout
    for proc in procs.procs:
        if proc.poll() is None and proc is not survivor:
            assert procs.stop(proc) == 0, procs.log(proc)
    assert procs.stop(survivor) == 0
    for proc in procs.procs:
        assert "Traceback" not in procs.log(proc), procs.log(proc)


def _in_partition_1(procs: Processes, real: redis.Redis, namespace: str,
                    monkeypatch: pytest.MonkeyPatch, pool: str) -> None:
    """A serve of 2 partitions and a worker of ``pool`` serving both; every flow this
    process submits from now on is placed in partition 1."""
    procs.serve("--partitions", "2")
    wait_for(lambda: real.get(Keys(namespace).partitions) == b"2", timeout=30)
    procs.worker("--pool", pool, "--concurrency", "2")
    wait_for(lambda: all(real.zcard(Keys(namespace, p).workers) for p in range(2)),
             timeout=30)
    monkeypatch.setattr(partitions, "place", lambda base_id, count: 1)


def test_a_flow_in_partition_1_is_cancelled_by_id_and_its_running_task_stopped(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`balancer flow cancel ID` finds the flow's partition from its id; the cancel
    reaches the worker through that partition's cancel list and kills the pool process
    running its task."""
    _in_partition_1(procs, real, namespace, monkeypatch, "process")
    pids = f"{namespace}:pids"
    try:
        with Flow("doomed") as doomed:
            long = tasks.note_pid_and_sleep(redis_url, pids, 30)
            tasks.square(2, upstream_tasks=[long])
        run = doomed.submit(real, namespace=namespace)
        assert run.id.endswith("-p1") and run.keys.partition == 1
        popped = real.blpop([pids], timeout=60)
        assert popped is not None, "the long task never started"
        pid = int(popped[1])
        cli = _cli(procs, "flow", "cancel", run.id)
        assert cli.returncode == 0 and "cancelled: 2 tasks" in cli.stdout, cli.stderr
        assert run.wait(timeout=10) == "cancelled"
        wait_for(lambda: ended(pid), timeout=20)
        assert real.exists(Keys(namespace, 1).flow(run.id))
        assert not real.exists(Keys(namespace).flow(run.id))
    finally:
        real.delete(pids)


def test_a_delayed_flow_in_partition_1_starts_from_that_partitions_delayed_set(
        procs: Processes, real: redis.Redis, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _in_partition_1(procs, real, namespace, monkeypatch, "thread")
    with Flow("later") as flow:
        node = tasks.square(3)
    run = flow.submit(real, namespace=namespace, delay=3.0)
    assert run.keys.partition == 1 and run.task_state(node) == "scheduled"
    assert real.zscore(Keys(namespace, 1).delayed, run.ids[node]) is not None
    assert run.wait(timeout=30) == "completed" and run.result(node) == 9
