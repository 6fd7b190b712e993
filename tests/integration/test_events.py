"""The events stream, written by the scripts of a real cluster (a dispatcher and worker
processes), read back by ``balancer events``."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time

import pytest
import redis
from balancer.common import events
from balancer.common.keys import Keys

from balancer import Flow, eventlog
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks


def _all(real: redis.Redis, namespace: str) -> list[events.Event]:
    return eventlog.latest(real, Keys(namespace), 100_000)[0]


def _kinds(found: list[events.Event]) -> list[str]:
    return [e.kind for e in found]


def _cluster(procs: Processes, real: redis.Redis, namespace: str, *worker_args: str
             ) -> subprocess.Popen[bytes]:
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--name", "ev-w1", *worker_args)
    keys = Keys(namespace)
    wait_for(lambda: real.get(keys.leader) and real.zcard(keys.workers) == 1, timeout=30)
    return worker


def test_a_flow_run_writes_each_task_change_and_the_cluster_changes(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    worker = _cluster(procs, real, namespace)
    with Flow("evented") as flow:
        a = tasks.constant(2)
        tasks.multiply(a, 3)
        tasks.sleep_for(0.3)  # runs past 20 ms: shown as started
        tasks.always_fails(1)  # two retries, then fails
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "failed"
    found = wait_for(lambda: [e for e in _all(real, namespace)
                              if e.kind == events.FLOW_FINISHED], timeout=10)
    assert found[0].flow == run.id and found[0].state == "failed"
    assert found[0].name == "evented" and found[0].count == 4

    every = _all(real, namespace)
    assert events.LEADER_CHANGED in _kinds(every)
    joined = [e for e in every if e.kind == events.WORKER_JOINED]
    assert [e.worker for e in joined] == ["ev-w1"]
    completed = {e.name: e for e in every if e.kind == events.TASK_COMPLETED}
    assert set(completed) == {"constant", "multiply", "sleep_for"}
    for e in completed.values():
        assert e.flow == run.id and e.queue == "default" and e.worker == "ev-w1"
        assert e.run_ms is not None and e.wait_ms is not None  # ready, started, finished
    assert completed["sleep_for"].run_ms >= 250
    started = [e for e in every if e.kind == events.TASK_STARTED]
    assert "sleep_for" in [e.name for e in started]  # (a slow start may show others too)
    retried = [e for e in every if e.kind == events.TASK_RETRIED]
    assert [e.name for e in retried] == ["always_fails"] * 2
    [failed] = [e for e in every if e.kind == events.TASK_FAILED]
    assert failed.name == "always_fails" and "ValueError: bad input 1" in failed.detail
    dispatched = sum(e.count or 0 for e in every if e.kind == events.DISPATCH)
    # 4 tasks, 2 retries: every lease is told (a task handed back and leased again too).
    assert dispatched >= 6
    # The dependent's wait counts from when its upstream completed, not from the submit.
    assert completed["multiply"].ready_ms >= completed["constant"].finished_ms

    procs.stop(worker)
    left = wait_for(lambda: [e for e in _all(real, namespace) if e.kind == events.WORKER_LEFT],
                    timeout=20)
    assert left[0].worker == "ev-w1" and left[0].count == 0


def test_balancer_events_prints_lines_and_json(procs: Processes, real: redis.Redis,
                                               namespace: str) -> None:
    _cluster(procs, real, namespace)
    with Flow("printed") as flow:
        tasks.constant(7)
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
    wait_for(lambda: events.FLOW_FINISHED in _kinds(_all(real, namespace)))
    cmd = [sys.executable, "-m", "balancer.cli", "events", "-n", "50"]
    text = subprocess.run(cmd, cwd=ROOT, env=procs.env, capture_output=True, text=True,
                          timeout=60)
    assert text.returncode == 0, text.stderr
    assert any("task.completed" in line and "name=constant" in line
               for line in text.stdout.splitlines())
    as_json = subprocess.run([*cmd, "--json"], cwd=ROOT, env=procs.env, capture_output=True,
                             text=True, timeout=60)
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {"task.completed", "flow.finished", "worker.joined"} <= {r["kind"] for r in rows}


def test_follow_prints_events_as_they_happen(procs: Processes, real: redis.Redis,
                                             namespace: str) -> None:
    _cluster(procs, real, namespace)
    follower = subprocess.Popen(
        [sys.executable, "-m", "balancer.cli", "events", "--follow", "--json", "-n", "0"],
        cwd=ROOT, env=procs.env, stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    try:
        # However long the follower takes to start on a loaded machine: a flow run at a
        # time until one that finished after it started shows up, task events included.
        seen: list[dict[str, object]] = []
        finished: set[object] = set()
        deadline = time.monotonic() + 120
        while not finished and time.monotonic() < deadline:
            with Flow("followed") as flow:
                tasks.constant(1)
            run = flow.submit(real, namespace=namespace)
            assert run.wait(timeout=60) == "completed"
            while select.select([follower.stdout], [], [], 2.0)[0]:
                seen.append(json.loads(follower.stdout.readline()))
                finished = {r["flow"] for r in seen if r["kind"] == "flow.finished"}
        assert finished, "the follower printed no flow.finished event"
        assert any(r["kind"] == "task.completed" and r["flow"] in finished for r in seen)
    finally:
        follower.terminate()
        follower.wait(10)


def test_task_events_off_writes_only_cluster_events(procs: Processes, real: redis.Redis,
                                                    namespace: str) -> None:
    procs.env["BALANCER_TASK_EVENTS"] = "off"
    _cluster(procs, real, namespace)
    with Flow("quiet") as flow:
        tasks.multiply(tasks.constant(2))
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
    kinds = wait_for(lambda: (k := _kinds(_all(real, namespace)))
                     and events.FLOW_FINISHED in k and k)
    assert not set(kinds) & (events.TASK_KINDS | {events.DISPATCH})
    # ...and the dependent got no ready time written: no per-task write at all.
    names = {real.hget(key, "name"): key
             for key in real.scan_iter(match="{" + namespace + "}:task:*")}
    assert real.hget(names[b"multiply"], "ready") is None
    assert real.hget(names[b"constant"], "ready") is not None  # written with the submit


def test_the_stream_is_capped(real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    for i in range(1500):
        events.emit(real, keys.events, 100, events.encode(events.WORKER_JOINED, worker=f"w{i}"))
    # Approximate trimming: Redis trims whole nodes of 100 entries.
    assert 100 <= real.xlen(keys.events) <= 300


@pytest.mark.parametrize("fields", [
    {b"k": b"nonsense"},
    {b"k": b"task.completed", b"t": b"3:abc"},
    {b"k": b"task.completed", b"t": b"99:short"},
])
def test_entries_not_of_the_schema_are_skipped(real: redis.Redis, namespace: str,
                                               fields: dict[bytes, bytes]) -> None:
    keys = Keys(namespace)
    real.xadd(keys.events, fields)  # type: ignore[arg-type]
    events.emit(real, keys.events, 100, events.encode(events.WORKER_JOINED, worker="w"))
    reader = eventlog.Reader(real, keys, "0")
    assert [e.kind for e in reader.read(block_ms=None)] == [events.WORKER_JOINED]
    assert reader.skipped == 1


def test_a_thread_pool_worker_writes_the_same_events(procs: Processes, real: redis.Redis,
                                                     namespace: str) -> None:
    _cluster(procs, real, namespace, "--pool", "thread")
    with Flow("threaded") as flow:
        tasks.multiply(tasks.constant(3))
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed"
    found = wait_for(lambda: [e for e in _all(real, namespace)
                              if e.kind == events.TASK_COMPLETED and e.flow == run.id
                              ] if events.FLOW_FINISHED in _kinds(_all(real, namespace))
                     else None)
    assert sorted(e.name for e in found) == ["constant", "multiply"]
    assert all(e.wait_ms is not None and e.run_ms is not None for e in found)
