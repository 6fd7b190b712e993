"""A step of the dispatcher host's wall clock (NTP correcting it, a VM resumed) moves
nothing: the dispatcher reckons Redis's clock on its monotonic clock. Real serve, run
under libfaketime with only its wall clock stepped 20 s forward, and real workers; with
the wall clock, it reaped every live worker every few seconds until its next sync, and a
running task ran again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import Processes, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


@pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed"
                    " (apt-get install libfaketime; .ci/run does)")
def test_the_dispatcher_hosts_wall_clock_stepping_forward_reaps_no_live_worker(
        procs: Processes, namespace: str, redis_url: str, real: redis.Redis,
        tmp_path: Path) -> None:
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    plain = dict(procs.env)
    procs.env.update(LD_PRELOAD=str(FAKETIME), FAKETIME_TIMESTAMP_FILE=str(clock),
                     FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
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
