"""A Redis that stops answering for longer than the worker timeout (a slow script, a fork
on a large dataset, CLIENT PAUSE during a failover or an upgrade) kept the workers' beats
out as it kept the dispatcher waiting: no live worker is called dead for it, and no
running task runs twice; a worker that really died meanwhile is still reaped. Real
serve and workers on a private redis-server, paused with CLIENT PAUSE."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, FlowRun
from tests.conftest import Processes, RedisServer, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration

# The tests' worker timeout is 2 s (heartbeats every 0.2 s): a pause well past it.
PAUSE_MS = 3500


def _pause(client: redis.Redis) -> None:
    client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    time.sleep(PAUSE_MS / 1000)


@dataclass
class Running:
    client: redis.Redis
    serve: subprocess.Popen[bytes]
    run: FlowRun
    runs_key: str  # a pid per start of the task


@contextlib.contextmanager
def _a_task_running(procs: Processes, namespace: str, seconds: float) -> Iterator[Running]:
    """serve and two process-pool workers on a private redis-server, and a flow of one
    task sleeping ``seconds``, started."""
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        procs.env["BALANCER_REDIS_URL"] = server.url
        serve = procs.serve()
        procs.worker("--pool", "process")
        procs.worker("--pool", "process")
        wait_for(lambda: client.zcard(Keys(namespace).workers) == 2, timeout=30)
        key = f"{namespace}:runs"
        with Flow("through-a-pause") as flow:
            tasks.note_pid_and_sleep(server.url, key, seconds)
        run = flow.submit(client, namespace=namespace)
        wait_for(lambda: client.llen(key) == 1, timeout=30)
        yield Running(client, serve, run, key)
    finally:
        server.cleanup()


def test_a_redis_pause_past_the_worker_timeout_reaps_no_live_worker_nor_runs_a_task_twice(
        procs: Processes, namespace: str) -> None:
    with _a_task_running(procs, namespace, 6.0) as running:
        _pause(running.client)
        assert running.run.wait(timeout=60) == "completed"
        assert running.client.llen(running.runs_key) == 1  # run once
        log = procs.log(running.serve)
        assert "reaped" not in log, log
        assert "to beat again before any is called dead" in log, log


def test_a_worker_that_died_during_a_redis_pause_is_still_reaped_and_its_task_run_again(
        procs: Processes, namespace: str) -> None:
    with _a_task_running(procs, namespace, 2.0) as running:
        child = int(running.client.lindex(running.runs_key, 0))  # type: ignore[arg-type]
        supervisor, = (w for w in procs.procs[1:] if child in {
            p.pid for p in psutil.Process(w.pid).children(recursive=True)})
        running.client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        supervisor.send_signal(signal.SIGKILL)  # its pool children die with it
        time.sleep(PAUSE_MS / 1000)
        assert running.run.wait(timeout=60) == "completed"
        # The run the kill cut short, then the one elsewhere.
        assert running.client.llen(running.runs_key) == 2
        log = procs.log(running.serve)
        assert log.count("reaped (missed heartbeats)") == 1, log
