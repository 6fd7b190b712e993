"""Cancelling the newer kinds of runs on a real cluster (`balancer serve` and `worker
start` processes): a flow whose map has children running and queued, a map cancelled
before it expanded, and a @flow function's open run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis
from balancer.common import codec
from balancer.common.keys import Keys

from balancer import Flow, FlowCancelled, FlowRun, flow, unmapped
from balancer.mapplan import child_ids
from bench.reap import ended
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks
from tests.integration.test_cancel import _registered

CHILDREN = 5


def _cli(procs: Processes, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "balancer.cli", *args, "--json"], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _states(real: redis.Redis, keys: Keys, ids: list[str]) -> dict[str, str | None]:
    return {t: (s.decode() if (s := real.hget(keys.task(t), "state")) else None)
            for t in ids}


def _counts_add_up(real: redis.Redis, keys: Keys, flow_id: str,
                   ids: list[str]) -> dict[str, str | None]:
    """Every task of the run (its own, the maps' children) is final, and the flow's
    counts say how many ended which way."""
    states = _states(real, keys, ids)
    flow_ = {k.decode(): v.decode(errors="replace")
             for k, v in real.hgetall(keys.flow(flow_id)).items()}
    assert flow_["remaining"] == "0"
    assert int(flow_["total"]) == len(ids)
    assert int(flow_.get("cancelled", 0)) == sum(s == "cancelled" for s in states.values())
    assert int(flow_["failed"]) == sum(s in ("failed", "upstream_failed")
                                       for s in states.values())
    assert set(states.values()) <= {"completed", "cancelled", "failed", "upstream_failed"}
    return states


def _quiet_dispatcher(procs: Processes, dispatcher: subprocess.Popen[bytes], map_id: str,
                      expanded: bool) -> None:
    """The dispatcher set nothing aside, never gathered the map, and expanded it only if
    it had before the cancel."""
    log = procs.log(dispatcher)
    assert "set aside" not in log, log[-2000:]
    lines = [line for line in log.splitlines() if f"task={map_id} " in line]
    assert not [line for line in lines if "gathered" in line], log[-2000:]
    assert sum("mapped:" in line for line in lines) == (1 if expanded else 0), log[-2000:]


def _serve_one_worker(procs: Processes, real: redis.Redis,
                      keys: Keys) -> tuple[subprocess.Popen[bytes], str]:
    """`balancer serve` and one registered process-pool worker of 2 slots; a fresh key for
    the tasks to note their pool process in."""
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "process")
    _registered(real, keys, 1)
    return worker, f"{keys.namespace}:pids-{uuid.uuid4().hex[:8]}"


def _calling(fn: Callable[[], Any], raised: list[BaseException]) -> threading.Thread:
    """A thread calling ``fn`` as a user's program would; what it raised goes to
    ``raised``, for the test to check."""

    def call() -> None:
        try:
            fn()
        except BaseException as exc:  # what the caller saw, checked by the test
            raised.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    return caller


def _another_map_completes(real: redis.Redis, namespace: str) -> None:
    """A map of another flow expands, runs and is gathered: the dispatcher has read the
    gate since the cancel (and the worker's slots are free)."""
    with Flow("after") as later:
        node = tasks.double.map([1, 2])
    run = later.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed"
    assert run.result(node) == [2, 4]


def test_cancelling_a_flow_stops_its_maps_running_children_and_never_starts_the_rest(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    dispatcher = procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "process")
    _registered(real, keys, 1)
    pids = f"{namespace}:pids-{uuid.uuid4().hex[:8]}"
    try:
        with Flow("mapped") as doomed:
            runs = tasks.note_pid_and_sleep.map(unmapped(redis_url), unmapped(pids),
                                                [60] * CHILDREN)
            tasks.total(runs)
        run = doomed.submit(real, namespace=namespace)
        map_id = run.ids[runs]
        children = child_ids(map_id, CHILDREN)
        started = [int(real.blpop([pids], timeout=60)[1]) for _ in range(2)]  # type: ignore[index]

        done = run.cancel()

        # Every child (2 running, 3 queued), the map and its dependent.
        assert (done.state, done.cancelled) == ("cancelled", CHILDREN + 2)
        for pid in started:
            wait_for(lambda pid=pid: ended(pid), timeout=20)  # type: ignore[misc]
        own = list(run.ids.values())
        states = _counts_add_up(real, keys, run.id, own + children)
        assert set(states.values()) == {"cancelled"}
        _another_map_completes(real, namespace)
        assert real.llen(pids) == 0, "a queued child of the cancelled map started"
        assert real.hmget(keys.task(map_id), ["state", "mapped"]) == [b"cancelled",
                                                                       str(CHILDREN).encode()]
        assert real.zcard(keys.gate) == 0 and real.hlen(keys.aside) == 0
        assert _counts_add_up(real, keys, run.id, own + children) == states
        _quiet_dispatcher(procs, dispatcher, map_id, expanded=True)
        assert "killing pid=" in procs.log(worker) and worker.poll() is None
    finally:
        real.delete(pids)


def test_a_map_cancelled_before_it_expanded_never_expands(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    dispatcher = procs.serve()
    procs.worker("--concurrency", "2", "--pool", "thread")
    _registered(real, keys, 1)
    tag = uuid.uuid4().hex[:8]
    started, gate = f"{namespace}:started-{tag}", f"{namespace}:gate-{tag}"
    try:
        with Flow("unexpanded") as doomed:
            long = tasks.note_then_wait_for_gate(redis_url, started, gate, 60)
            mapped = tasks.double.map([1, 2, 3], upstream_tasks=[long])
        run = doomed.submit(real, namespace=namespace)
        map_id = run.ids[mapped]
        assert real.blpop([started], timeout=60) is not None

        assert run.cancel().cancelled == 2

        # The abandoned upstream ends now: its ack is refused, the map stays unexpanded.
        real.rpush(gate, 1)
        _another_map_completes(real, namespace)
        assert real.hmget(keys.task(map_id), ["state", "mapped"]) == [b"cancelled", None]
        assert not any(real.exists(keys.task(c)) for c in child_ids(map_id, 3))
        assert real.zcard(keys.gate) == 0 and real.hlen(keys.aside) == 0
        _counts_add_up(real, keys, run.id, list(run.ids.values()))
        _quiet_dispatcher(procs, dispatcher, map_id, expanded=False)
    finally:
        real.delete(started, gate)


def test_cancelling_a_flow_functions_run_cancels_its_tasks_and_refuses_its_next_submit(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    worker, pids = _serve_one_worker(procs, real, keys)
    submitted, go_on = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    @flow(redis_url=procs.env["BALANCER_REDIS_URL"], namespace=namespace, retries=2)
    def doomed() -> int:
        long = tasks.note_pid_and_sleep.submit(redis_url, pids, 60)
        tasks.add.submit(long, 1)  # waits for `long`: the client's watcher holds it
        submitted.set()
        go_on.wait(60)
        return tasks.add(1, 2)  # type: ignore[no-any-return]

    caller = _calling(doomed, raised)
    try:
        popped = real.blpop([pids], timeout=60)
        assert popped is not None and submitted.wait(60)
        [row] = [r for r in _cli(procs, "flows") if r["name"] == "doomed"]
        run_id = row["id"]
        added = [codec.unpack(e)[0] for e in real.lrange(keys.flow_tasks(run_id), 0, -1)]
        assert len(added) == 2 and _states(real, keys, added)[added[1]] == "pending"

        cli = subprocess.run([sys.executable, "-m", "balancer.cli", "flow", "cancel", run_id],
                             cwd=ROOT, env=procs.env, capture_output=True, text=True,
                             timeout=60)

        assert cli.returncode == 0, cli.stderr
        assert f"flow {run_id} cancelled: 2 tasks" in cli.stdout
        wait_for(lambda: ended(int(popped[1])), timeout=20)
        # The watcher stops holding the cancelled task (and ends), releasing nothing.
        wait_for(lambda: not any(t.name == f"flow-{run_id}-watch"
                                 for t in threading.enumerate()), timeout=30)
        go_on.set()
        caller.join(60)
        assert not caller.is_alive()
        [error] = raised
        assert isinstance(error, FlowCancelled) and "was cancelled" in str(error), error
        assert "'add' not submitted" in str(error)
        assert _states(real, keys, added) == {t: "cancelled" for t in added}
        record = {k.decode(): v.decode(errors="replace")
                  for k, v in real.hgetall(keys.flow(run_id)).items()}
        assert (record["state"], record["total"], record["cancelled"], record["remaining"],
                record["open"]) == ("cancelled", "2", "2", "0", "0")
        assert real.llen(keys.flow_tasks(run_id)) == 2  # the refused task was not added
        assert FlowRun.attach(run_id, real, namespace=namespace).state == "cancelled"
        assert worker.poll() is None
    finally:
        go_on.set()
        real.delete(pids)


def test_cancelling_a_flow_functions_run_cancels_its_sub_runs_too(
        procs: Processes, real: redis.Redis, redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    worker, pids = _serve_one_worker(procs, real, keys)
    go_on = threading.Event()
    raised: list[BaseException] = []
    url = procs.env["BALANCER_REDIS_URL"]

    @flow(redis_url=url, namespace=namespace)
    def inner() -> int:
        tasks.note_pid_and_sleep.submit(redis_url, pids, 60)
        go_on.wait(60)
        return tasks.add(1, 2)  # type: ignore[no-any-return]

    @flow(redis_url=url, namespace=namespace)
    def outer() -> int:
        return inner() + 1  # type: ignore[no-any-return]

    caller = _calling(outer, raised)
    try:
        popped = real.blpop([pids], timeout=60)
        assert popped is not None
        rows = {r["name"]: r["id"] for r in _cli(procs, "flows")}
        parent, sub = rows["outer"], rows["inner"]

        cli = subprocess.run([sys.executable, "-m", "balancer.cli", "flow", "cancel", parent],
                             cwd=ROOT, env=procs.env, capture_output=True, text=True,
                             timeout=60)

        assert cli.returncode == 0, cli.stderr
        assert real.hget(keys.flow(sub), "state") == b"cancelled"
        assert real.hget(keys.flow(parent), "state") == b"cancelled"
        wait_for(lambda: ended(int(popped[1])), timeout=20)  # the sub-run's task stopped
        go_on.set()
        caller.join(60)
        assert not caller.is_alive()
        [error] = raised
        assert isinstance(error, FlowCancelled), error
        assert worker.poll() is None
    finally:
        go_on.set()
        real.delete(pids)
