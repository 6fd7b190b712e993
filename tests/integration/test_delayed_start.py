"""A flow submitted to start later (``delay=``, ``eta=``): its first tasks wait, scheduled,
and say why, and start no earlier than asked, a map among them; a cancel before then
leaves nothing to run; a bad delay is refused before anything is written. Real
processes on a real Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, FlowError
from tests.conftest import ROOT, Processes
from tests.integration import tasks

pytestmark = pytest.mark.integration

# Long enough that what a test checks before the start is done well before it, on a
# busy machine too.
DELAY = 3.0


def _started_ms(real: redis.Redis, keys: Keys, task_id: str) -> int:
    return int(real.hget(keys.task(task_id), "started") or 0)


def test_a_delayed_flow_waits_scheduled_says_why_and_starts_no_earlier(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    procs.serve_and_worker(real, namespace, "--concurrency", "2", "--pool", "thread")
    with Flow("later") as flow:
        first = tasks.constant(2)
        mapped = tasks.multiply.map([1, 2, 3])  # a gated first task: through the gate
        facts = tasks.run_facts()
        last = tasks.add(first, tasks.total(mapped))
    submitted_ms = int(time.time() * 1000)
    run = flow.submit(real, namespace=namespace, delay=DELAY)
    states = run.states()
    assert (states["constant"], states["multiply"], states["run_facts"]) == (
        "scheduled", "scheduled", "scheduled")
    assert states["add"] == "pending"
    why = run.why()
    assert why["constant"].startswith("its run starts later: due in")
    start_ms = int(real.hget(keys.flow(run.id), "scheduled") or 0)
    start = datetime.fromtimestamp(start_ms / 1000, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    shown = subprocess.run([sys.executable, "-m", "balancer.cli", "flow", run.id], cwd=ROOT,
                           env=procs.env, capture_output=True, text=True, timeout=30)
    assert f"(starts {start})" in shown.stdout.splitlines()[0], shown.stdout + shown.stderr
    assert run.wait(timeout=60) == "completed", run.states()
    assert run.result(last) == 2 + 12
    assert start_ms >= submitted_ms + DELAY * 1000
    for node in (first, facts):
        assert _started_ms(real, keys, run.ids[node]) >= start_ms  # not a moment before
    # The run stands for its start, as a scheduled run does.
    assert datetime.fromisoformat(run.result(facts)["date"]) == datetime.fromtimestamp(
        start_ms / 1000, timezone.utc)


def test_an_eta_in_the_past_runs_at_once_and_one_ahead_waits_for_it(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace, "--concurrency", "1", "--pool", "thread")
    with Flow("past") as flow:
        node = tasks.constant(1)
    run = flow.submit(real, namespace=namespace,
                      eta=datetime.now(timezone.utc) - timedelta(hours=1))
    assert run.wait(timeout=30) == "completed" and run.result(node) == 1
    ahead = flow.submit(real, namespace=namespace,
                        eta=datetime.now(timezone.utc) + timedelta(seconds=DELAY))
    assert ahead.task_state(node) == "scheduled"
    assert ahead.wait(timeout=60) == "completed"


def test_a_delayed_flow_cancelled_before_its_start_never_runs(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    procs.serve_and_worker(real, namespace, "--concurrency", "1", "--pool", "thread")
    with Flow("called-off") as flow:
        node = tasks.constant(1)
        tasks.square(node)
    run = flow.submit(real, namespace=namespace, delay=DELAY)
    assert run.cancel().cancelled == 2
    assert run.wait(timeout=10) == "cancelled"
    assert real.zscore(keys.delayed, run.ids[node]) is None
    time.sleep(DELAY + 1.0)  # past its start: still nothing ran
    assert run.states() == {"constant": "cancelled", "square": "cancelled"}
    assert not real.hget(keys.task(run.ids[node]), "started")


@pytest.mark.parametrize(("options", "message"), [
    ({"delay": -1}, "delay must be >= 0"),
    ({"delay": float("nan")}, "delay must be a finite number"),
    ({"delay": 1, "eta": datetime.now(timezone.utc)}, "give delay or eta, not both"),
    ({"eta": datetime(2030, 1, 1)}, "eta must be an aware datetime"),
    ({"eta": "tomorrow"}, "eta must be a datetime"),
    ({"delay": 2e9}, "delay must be at most 1e[+]09 seconds"),
])
def test_a_bad_delay_is_refused_before_anything_is_written(
        real: redis.Redis, namespace: str, options: dict[str, object], message: str) -> None:
    with Flow("bad") as flow:
        tasks.constant(1)
    with pytest.raises(FlowError, match=message):
        flow.submit(real, namespace=namespace, **options)  # type: ignore[arg-type]
    assert not real.keys(f"{{{namespace}}}:*")


def test_a_dispatcher_killed_before_the_start_leaves_it_to_the_next_one(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """The start waits in Redis, not in a dispatcher's memory."""
    procs.serve_and_worker(real, namespace, "--concurrency", "1", "--pool", "thread")
    serve = procs.procs[0]
    with Flow("outlives") as flow:
        node = tasks.constant(7)
    run = flow.submit(real, namespace=namespace, delay=DELAY)
    procs.stop(serve, signal.SIGKILL)
    procs.serve()  # takes over once the killed leader's lease expires
    assert run.wait(timeout=60) == "completed" and run.result(node) == 7
