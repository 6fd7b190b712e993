"""The product as users run it: `balancer serve` and `worker start` as real processes,
client code submitting over a real Redis, and the examples run as typed in the README."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from balancer.common import codec, signals
from balancer.common.keys import Keys

from balancer import Flow
from balancer import submit as submit_module
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks


def _workers_up(client: redis.Redis, keys: Keys, n: int) -> None:
    wait_for(lambda: client.zcard(keys.workers) >= n, timeout=30)


def _script_env(procs: Processes) -> dict[str, str]:
    return {**procs.env}


def test_a_200_task_flow_completes_on_two_worker_processes(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--queue", "default", "--concurrency", "2")
    procs.worker("--queue", "default", "--concurrency", "2", "--pool", "thread")
    _workers_up(real, keys, 2)
    with Flow("two-hundred") as flow:
        squares = [tasks.square(i) for i in range(150)]
        sums = [tasks.add(squares[i], squares[i + 1]) for i in range(0, 100, 2)]
    assert len(flow.nodes) == 200
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=120) == "completed"
    assert [run.result(s) for s in squares] == [i * i for i in range(150)]
    assert [run.result(s) for s in sums] == [i * i + (i + 1) ** 2 for i in range(0, 100, 2)]
    workers_used = {real.hget(keys.task(t), "worker") for t in run.ids.values()}
    assert len(workers_used) == 2


def test_tasks_prefetched_behind_a_long_run_are_handed_to_the_free_worker(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    for name in ("left", "right"):
        procs.worker("--concurrency", "1", "--pool", "thread", "--name", name)
    _workers_up(real, keys, 2)
    # Teach the cluster that this queue's tasks are very short: it prefetches them.
    with Flow("warm-up") as warm:
        for _ in range(40):
            tasks.whoami()
    assert warm.submit(real, namespace=namespace).wait(timeout=30) == "completed"
    time.sleep(2.5)  # heartbeats carry the durations to the dispatcher

    with Flow("long-then-short") as flow:
        long = tasks.sleep_for(3.0)
        shorts = [tasks.whoami() for _ in range(12)]
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed"

    def record(node: object) -> tuple[str, int]:
        worker, finished = real.hmget(keys.task(run.ids[node]), ["worker", "finished"])
        return worker.decode(), int(finished)

    long_worker, long_finished = record(long)
    for short in shorts:
        worker, finished = record(short)
        assert finished < long_finished, "a short task waited behind the long one"
        assert worker != long_worker
    logs = "".join(procs.log(p) for p in procs.procs)
    assert "prefetched behind a long run" in logs


def test_seed_samples_run_against_the_cluster_in_order(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--queue", "default", "--queue", "high-priority", "--queue",
                          "low-priority", "--concurrency", "2")
    _workers_up(real, keys, 1)
    for script in ("examples/seed_basic.py", "examples/seed_queues.py"):
        done = subprocess.run([sys.executable, script], cwd=ROOT, env=_script_env(procs),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    flows = {}
    for flow_id in real.zrange(keys.flows, 0, -1):
        name, state, blob = real.hmget(keys.flow(flow_id.decode()), ["name", "state", "tasks"])
        flows[name.decode()] = (state.decode(), codec.unpack(blob))
    assert flows["load-balanced-flow"][0] == "completed"
    assert flows["priority-flow"][0] == "completed"
    times = {}
    for task_id, name in flows["load-balanced-flow"][1]:
        started, finished, result = real.hmget(keys.task(task_id),
                                               ["started", "finished", "result"])
        times[name] = (int(started), int(finished))
        assert codec.unpack(result) == f"Task {name[-1]} result"
    assert times["task1"][1] <= times["task2"][0]
    assert times["task2"][1] <= times["task3"][0]
    wait_for(lambda: "Executing Task 3" in procs.log(worker))
    log = procs.log(worker)
    assert log.index("Executing Task 1") < log.index("Executing Task 2") < log.index(
        "Executing Task 3")


def test_examples_run_on_the_embedded_cluster_without_redis() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    done = subprocess.run([sys.executable, "examples/etl.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "flow completed: total = 100" in done.stdout


def test_process_pool_kills_a_task_past_its_timeout_and_keeps_serving(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--concurrency", "1", "--pool", "process")
    _workers_up(real, keys, 1)
    flow = Flow("timeouts")
    hung = flow.add_task(tasks.hangs)
    later = flow.add_task(tasks.whoami)
    later.set_upstream(hung)  # runs only if... it never runs: upstream failed
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=30) == "failed"
    error = run.error(hung)
    assert error is not None and error.type == "TimeoutError"
    assert run.task_state(later) == "upstream_failed"
    again = Flow("after-timeout")
    node = again.add_task(tasks.whoami)
    run2 = again.submit(real, namespace=namespace)
    assert run2.wait(timeout=30) == "completed"
    assert isinstance(run2.result(node), int)


def test_sigterm_finishes_running_tasks_and_hands_back_the_rest(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "1", "--pool", "thread", "--name", "draining")
    _workers_up(real, keys, 1)
    with Flow("drain") as flow:
        first = tasks.sleep_for(1.5)
        rest = [tasks.constant(i) for i in range(3)]
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: run.task_state(first) == "running", timeout=20)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    log = procs.log(worker)
    assert run.task_state(first) == "completed"
    assert real.exists(keys.worker("draining")) == 0
    assert all(run.task_state(r) == "queued" for r in rest)
    queued = real.zrange(keys.queue("default"), 0, -1)
    assert sorted(q.decode() for q in queued) == sorted(run.ids[r] for r in rest)
    assert "stopped" in log
    # The handed-back tasks run as soon as another worker comes.
    procs.worker("--concurrency", "2", "--pool", "thread")
    assert run.wait(timeout=30) == "completed"
    assert [run.result(r) for r in rest] == [0, 1, 2]


def test_status_shows_workers_queues_and_flows_as_json(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--queue", "default", "--concurrency", "3", "--name", "status-w")
    _workers_up(real, keys, 1)
    flow = Flow("for-status")
    flow.add_task(tasks.whoami)
    flow.submit(real, namespace=namespace).wait(timeout=30)
    time.sleep(0.3)
    done = subprocess.run([sys.executable, "-m", "balancer.cli", "status", "--json"],
                          cwd=ROOT, env=procs.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["leader"]
    (w,) = status["workers"]
    assert w["id"] == "status-w" and w["capacity"] == 3 and w["queues"] == ["default"]
    assert 0.0 <= w["cpu"] <= 1.0
    assert [q["name"] for q in status["queues"]] == ["default"]
    assert status["flows"][0]["name"] == "for-status"
    assert status["flows"][0]["state"] == "completed"


def test_single_task_submits_to_an_idle_cluster_are_leased_by_the_submit_itself(
    procs: Processes, real: redis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--queue", "default", "--concurrency", "1")
    procs.worker("--queue", "default", "--concurrency", "1")
    _workers_up(real, keys, 2)
    caplog.set_level(logging.INFO, logger="balancer.client")
    results, standing, missed = [], 0, 0
    for i in range(20):
        with Flow("single") as flow:
            node = tasks.square(i)
        # The offer this client read at its previous submit still stands: this submit
        # must take it (both workers are idle: each task completed before the next).
        seen = submit_module.seen_offer(real, keys, "default")
        stands = seen is not None and real.get(keys.offer("default")) == seen
        caplog.clear()
        run = flow.submit(real, namespace=namespace)
        direct = any("leased it at once" in r.getMessage() for r in caplog.records)
        # The offer as the submit's script found it (the client keeps it for the next
        # submit): one rewritten since the check above was rightly refused.
        found = submit_module.seen_offer(real, keys, "default")
        standing += stands
        missed += stands and found == seen and not direct
        assert run.wait(timeout=30) == "completed"
        results.append(run.result(node))
    assert results == [i * i for i in range(20)]
    # Offers stand once the dispatcher found the queue empty; a submit whose offer still
    # stood when its script ran took it, every time.
    assert standing >= 10 and missed == 0
    shown = subprocess.run([sys.executable, "-m", "balancer.cli", "status", "--json"],
                           env=procs.env, check=True, timeout=60, capture_output=True)
    [default] = [q for q in json.loads(shown.stdout)["queues"] if q["name"] == "default"]
    workers = {m.decode() for m in real.zrange(keys.workers, 0, -1)}
    assert default["offered_to"] and set(default["offered_to"]) <= workers

    # A paused queue refuses the offer: the task waits, and runs once resumed.
    cli = [sys.executable, "-m", "balancer.cli", "queue"]
    subprocess.run([*cli, "pause", "default"], env=procs.env, check=True, timeout=60)
    wait_for(lambda: not real.exists(keys.offer("default")), timeout=10)
    with Flow("paused") as flow:
        node = tasks.square(7)
    run = flow.submit(real, namespace=namespace)
    time.sleep(1.0)
    assert real.zcard(keys.queue("default")) == 1
    subprocess.run([*cli, "resume", "default"], env=procs.env, check=True, timeout=60)
    assert run.wait(timeout=30) == "completed"
    assert run.result(node) == 49


def test_a_task_leased_by_offer_to_a_worker_that_died_runs_on_another(
    procs: Processes, real: redis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(namespace)
    procs.serve()
    workers = {name: procs.worker("--queue", "default", "--concurrency", "1", "--name", name)
               for name in ("first", "second")}
    _workers_up(real, keys, 2)
    with Flow("first-use") as flow:  # the queue exists from its first submit on
        tasks.square(1)
    assert flow.submit(real, namespace=namespace).wait(timeout=30) == "completed"
    wait_for(lambda: (o := real.get(keys.offer("default"))) is not None
             and len(signals.parse_offer(o).workers) == 2, timeout=30)  # type: ignore[union-attr]

    def standing() -> tuple[bytes, str]:
        """The offer, and the worker submit_small.lua takes from it when both are idle: the least
        loaded host, the first offered on a tie."""
        raw = real.get(keys.offer("default"))
        offer = signals.parse_offer(raw)  # type: ignore[arg-type]
        assert offer is not None
        return raw, min(offer.workers, key=lambda w: w[2])[0]  # type: ignore[return-value]

    _, doomed = standing()
    procs.stop(workers[doomed], signal.SIGKILL)  # registered until the dispatcher reaps it
    raw, chosen = standing()
    # This client knows the offer that stands (as if its last submit had just read it).
    submit_module.see_offer(real, keys, "default", raw)
    caplog.set_level(logging.INFO, logger="balancer.client")
    with Flow("after-death") as flow:
        node = tasks.square(9)
    run = flow.submit(real, namespace=namespace)
    assert [r.getMessage().rsplit("=", 1)[-1] for r in caplog.records
            if "leased it at once" in r.getMessage()] == [chosen]
    assert run.wait(timeout=60) == "completed"
    assert run.result(node) == 81
    survivor = ({"first", "second"} - {doomed}).pop()
    assert real.hget(keys.task(run.ids[node]), "worker") == survivor.encode()


def test_a_task_submitted_while_a_short_queue_s_one_worker_is_busy_is_leased_behind_it(
    procs: Processes, real: redis.Redis, namespace: str, redis_url: str,
    caplog: pytest.LogCaptureFixture
) -> None:
    """Once the worker has told its queue's tasks are short, the standing offer gives it
    places behind what it runs: the next submit leases to it at once, as the dispatcher
    would with prefetch, instead of waiting for a free slot through the dispatcher."""
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--queue", "default", "--concurrency", "1", "--name", "solo")
    _workers_up(real, keys, 1)

    def offer_depth() -> int:
        raw = real.get(keys.offer("default"))
        offer = signals.parse_offer(raw) if raw is not None else None
        return offer.depth if offer is not None else 0

    def short_tasks_told() -> bool:
        with Flow("short") as flow:
            tasks.square(2)
        assert flow.submit(real, namespace=namespace).wait(timeout=30) == "completed"
        return offer_depth() > 1

    wait_for(short_tasks_told, timeout=60)
    shown = subprocess.run([sys.executable, "-m", "balancer.cli", "status"], env=procs.env,
                           check=True, timeout=60, capture_output=True, text=True).stdout
    assert "a small submit goes at once to: solo (one task also behind" in shown
    submit_module.see_offer(real, keys, "default", real.get(keys.offer("default")))
    caplog.set_level(logging.INFO, logger="balancer.client")
    gate = f"{namespace}:gate"
    with Flow("busy") as flow:
        tasks.wait_for_gate(redis_url, gate, 60.0)
    busy = flow.submit(real, namespace=namespace)
    with Flow("behind") as flow:
        node = tasks.square(7)
    behind = flow.submit(real, namespace=namespace)
    leased_at_once = [r.getMessage().rsplit("=", 1)[-1] for r in caplog.records
                      if "leased it at once" in r.getMessage()]
    assert leased_at_once == ["solo", "solo"]  # the second behind the first, still held
    real.rpush(gate, 1)
    assert busy.wait(timeout=60) == "completed"
    assert behind.wait(timeout=60) == "completed" and behind.result(node) == 49


def test_tasks_queued_behind_a_full_worker_wait_as_a_backlog_and_all_run_once_it_frees(
    procs: Processes, real: redis.Redis, namespace: str, redis_url: str
) -> None:
    """The dispatcher keeps the queue's backlog key while no worker has room (small
    submits behind it then wake it not); the slot freed wakes it, and every task runs."""
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--queue", "default", "--concurrency", "1")
    _workers_up(real, keys, 1)
    gate = f"{namespace}:gate"
    with Flow("busy") as flow:
        tasks.wait_for_gate(redis_url, gate, 60.0)
    busy = flow.submit(real, namespace=namespace)
    wait_for(lambda: real.zcard(keys.queue("default")) == 0 and real.scard(
        keys.leases(real.zrange(keys.workers, 0, 0)[0].decode())) == 1, timeout=30)
    runs, nodes = [], []
    for i in range(15):
        with Flow(f"behind-{i}") as flow:
            nodes.append(tasks.square(i))
        runs.append(flow.submit(real, namespace=namespace))
    wait_for(lambda: real.exists(keys.backlog("default")), timeout=30)
    real.rpush(gate, 1)
    assert busy.wait(timeout=60) == "completed"
    for i, (run, node) in enumerate(zip(runs, nodes)):
        assert run.wait(timeout=60) == "completed" and run.result(node) == i * i


def test_the_embedded_cluster_keeps_its_events_stream_capped() -> None:
    """fakeredis ignores XADD MAXLEN ~: the embedded cluster trims the stream per run."""
    script = (
        "from balancer import Flow, embedded\n"
        "from balancer.common.keys import Keys\n"
        "from tests.integration import tasks\n"
        "for i in range(12):\n"
        "    with Flow('tiny') as flow:\n"
        "        tasks.constant(i)\n"
        "    assert flow.run(quiet=True).is_successful()\n"
        "print(embedded.connect(embedded.URL).xlen(Keys('balancer').events))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env.update(BALANCER_EVENTS_MAX="3", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # At most the cap and what the last run wrote (dispatch, completed, flow finished);
    # twelve runs uncapped would hold over 36.
    assert int(done.stdout.strip().splitlines()[-1]) <= 3 + 3
