"""A host's wall clock, off or stepping (NTP correcting it, a VM resumed), moves nothing:
the dispatcher and the clients reckon Redis's clock on their monotonic clocks
(common/redisclock.py). Real processes under libfaketime, their wall clocks alone moved."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from balancer.common import events
from balancer.common.keys import Keys

from balancer import Flow, eventlog
from tests.conftest import Processes, wait_for
from tests.integration import cached_tasks, tasks

pytestmark = pytest.mark.integration

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
needs_faketime = pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not"
                                    " installed (apt-get install libfaketime; .ci/run does)")


def _wall_clock_moved(env: dict[str, str], by: str) -> dict[str, str]:
    """``env`` for a process whose wall clock is moved ``by`` (as libfaketime reads it:
    "-1h", or "@file" for the offset a file holds, read again at every call) and whose
    monotonic clock is left alone."""
    moved = {**env, "LD_PRELOAD": str(FAKETIME), "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    if by.startswith("@"):
        moved.update(FAKETIME_TIMESTAMP_FILE=by[1:], FAKETIME_NO_CACHE="1")
    else:
        moved["FAKETIME"] = by
    return moved


@needs_faketime
def test_the_dispatcher_hosts_wall_clock_stepping_forward_reaps_no_live_worker(
        procs: Processes, namespace: str, redis_url: str, real: redis.Redis,
        tmp_path: Path) -> None:
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    plain = procs.env
    procs.env = _wall_clock_moved(plain, f"@{clock}")
    serve = procs.serve()
    procs.env = plain
    procs.worker("--pool", "thread")
    procs.worker("--pool", "thread")
    wait_for(lambda: real.zcard(Keys(namespace).workers) == 2, timeout=30)
    key = f"{namespace}:runs"
    with Flow("through-a-clock-step") as flow:
        tasks.note_pid_and_sleep(redis_url, key, 6.0)
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: real.llen(key) == 1, timeout=30)
    clock.write_text("+20s\n")  # serve's wall clock only: its monotonic clock goes on
    time.sleep(1)
    assert run.wait(timeout=60) == "completed"
    assert real.llen(key) == 1  # run once
    log = procs.log(serve)
    assert "reaped" not in log, log


@needs_faketime
def test_a_client_whose_clock_is_an_hour_behind_overtakes_no_priority(
        procs: Processes, namespace: str, redis_url: str, real: redis.Redis) -> None:
    for queue, priority in (("high", "5"), ("low", "0")):
        subprocess.run([sys.executable, "-m", "balancer.cli", "queue", "set", queue,
                        "--priority", priority], env=procs.env, check=True, timeout=60,
                       capture_output=True)
    order = f"{namespace}:order"
    with Flow("on-time") as flow:
        for i in range(3):
            tasks.record_high(redis_url, order, f"high{i}")
    flow.submit(real, namespace=namespace)
    behind = (f"from balancer import Flow\nfrom tests.integration import tasks\n"
              f"with Flow('an-hour-behind') as flow:\n"
              f"    tasks.record_low({redis_url!r}, {order!r}, 'low')\n"
              f"flow.submit(namespace={namespace!r})\n")
    subprocess.run([sys.executable, "-c", behind], env=_wall_clock_moved(procs.env, "-1h"),
                   check=True, timeout=60)
    procs.serve()
    procs.worker("--pool", "thread", "--concurrency", "1", "--queue", "high",
                 "--queue", "low")
    wait_for(lambda: real.llen(order) == 4, timeout=60)
    # Read from its wall clock, the low task's queue head looked an hour old: 60 levels
    # of aging (one a minute) above the high queue's 5.
    assert [x.decode() for x in real.lrange(order, 0, -1)] == [
        "high0", "high1", "high2", "low"]


@needs_faketime
def test_a_dashboard_whose_clock_is_an_hour_ahead_charts_what_just_ran(
        procs: Processes, namespace: str, real: redis.Redis) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    plain = procs.env
    procs.env = _wall_clock_moved(plain, "+1h")
    procs.start("balancer.cli", "dashboard", "--port", str(port), name="dashboard")
    procs.env = plain
    procs.serve()
    procs.worker("--pool", "thread")
    wait_for(lambda: real.zcard(Keys(namespace).workers) == 1, timeout=30)
    with Flow("charted") as flow:
        for i in range(5):
            tasks.constant(i)
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"

    def charted() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview",
                                        timeout=10) as resp:
                series = json.load(resp)["throughput"]
        except OSError:
            return 0
        return sum(bucket["completed"] for bucket in series)
    # Events carry Redis's time; a window read from this host's clock, an hour ahead,
    # held none of them.
    assert wait_for(charted, timeout=30) == 5


def _worker_an_hour_off(procs: Processes, real: redis.Redis, namespace: str, by: str,
                        pool: str) -> None:
    plain = procs.env
    procs.env = _wall_clock_moved(plain, by)
    procs.worker("--pool", pool)
    procs.env = plain
    procs.serve()
    wait_for(lambda: real.zcard(Keys(namespace).workers) == 1, timeout=30)


@needs_faketime
@pytest.mark.parametrize(("by", "pool"), [("-1h", "process"), ("+1h", "thread")])
def test_a_worker_whose_clock_is_off_times_its_tasks_by_redis(
        procs: Processes, namespace: str, real: redis.Redis, by: str, pool: str) -> None:
    _worker_an_hour_off(procs, real, namespace, by, pool)
    with Flow("timed") as flow:
        tasks.add(tasks.constant(1), 2)
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
    # The run and wait times the metrics chart come from the events: read from the
    # worker's wall clock, each was off by the hour (or cut to 0).
    done = wait_for(lambda: [e for e in eventlog.latest(real, Keys(namespace), 1000)[0]
                             if e.kind == events.TASK_COMPLETED], timeout=30)
    assert len(done) == 2  # queued by the submit, then by the first's acknowledgement
    for e in done:
        assert e.run_ms is not None and e.wait_ms is not None
        assert e.run_ms < 60_000 and e.wait_ms < 60_000, e
        assert e.started_ms is not None and e.ready_ms is not None
        assert e.started_ms >= e.ready_ms - 1_000, e  # a worker's ms against Redis's


@needs_faketime
def test_a_worker_whose_clock_is_an_hour_ahead_reuses_a_result_another_cached(
        procs: Processes, namespace: str, real: redis.Redis, tmp_path: Path) -> None:
    runs = tmp_path / "runs.log"

    def run_once() -> None:
        with Flow("cached") as flow:
            cached_tasks.slow_square(str(runs), 3)
        assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
    procs.serve()
    on_time = procs.worker("--pool", "thread")
    run_once()  # cached for an hour
    procs.stop(on_time)
    wait_for(lambda: real.zcard(Keys(namespace).workers) == 0, timeout=30)
    plain = procs.env
    procs.env = _wall_clock_moved(plain, "+1h")
    procs.worker("--pool", "thread")
    procs.env = plain
    run_once()
    # By this worker's clock, the entry the other wrote had just expired: the task ran.
    assert runs.read_text().splitlines() == ["square 3"]
