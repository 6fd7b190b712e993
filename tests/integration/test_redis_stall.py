"""A Redis that stops answering for longer than the worker timeout (a slow script, a fork
on a large dataset, CLIENT PAUSE during a failover or an upgrade) kept the workers' beats
out as it kept the dispatcher waiting: no live worker is called dead for it, and no
running task runs twice; a worker that really died meanwhile is still reaped. Real
serve and workers on a private redis-server, paused with CLIENT PAUSE."""

from __future__ import annotations

import signal
import time

import psutil
import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import Processes, RedisServer, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration

# The tests' worker timeout is 2 s (heartbeats every 0.2 s): a pause well past it.
PAUSE_MS = 3500


def _pause(client: redis.Redis) -> None:
    client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    time.sleep(PAUSE_MS / 1000)


def _started(procs: Processes, namespace: str, server: RedisServer) -> tuple[
        redis.Redis, object]:
    client = redis.Redis.from_url(server.url)
    procs.env["BALANCER_REDIS_URL"] = server.url
    serve = procs.serve()
    procs.worker("--pool", "process")
    procs.worker("--pool", "process")
    wait_for(lambda: client.zcard(Keys(namespace).workers) == 2, timeout=30)
    return client, serve


def test_a_redis_pause_past_the_worker_timeout_reaps_no_live_worker_nor_runs_a_task_twice(
        procs: Processes, namespace: str) -> None:
    server = RedisServer().start()
    try:
        client, serve = _started(procs, namespace, server)
        key = f"{namespace}:runs"
        with Flow("through-a-pause") as flow:
            tasks.note_pid_and_sleep(server.url, key, 6.0)
        run = flow.submit(client, namespace=namespace)
        wait_for(lambda: client.llen(key) == 1, timeout=30)
        _pause(client)
        assert run.wait(timeout=60) == "completed"
        assert client.llen(key) == 1  # run once
        log = procs.log(serve)  # type: ignore[arg-type]
        assert "reaped" not in log, log
        assert "to beat again before any is called dead" in log, log
    finally:
        server.cleanup()


def test_a_worker_that_died_during_a_redis_pause_is_still_reaped_and_its_task_run_again(
        procs: Processes, namespace: str) -> None:
    server = RedisServer().start()
    try:
        client, serve = _started(procs, namespace, server)
        key = f"{namespace}:runs"
        with Flow("lost-in-a-pause") as flow:
            tasks.note_pid_and_sleep(server.url, key, 2.0)
        run = flow.submit(client, namespace=namespace)
        child = int(wait_for(lambda: client.lindex(key, 0), timeout=30))
        supervisor, = (w for w in procs.procs[1:] if child in {
            p.pid for p in psutil.Process(w.pid).children(recursive=True)})
        client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        supervisor.send_signal(signal.SIGKILL)  # its pool children die with it
        time.sleep(PAUSE_MS / 1000)
        assert run.wait(timeout=60) == "completed"
        assert client.llen(key) == 2  # the run the kill cut short, then the one elsewhere
        log = procs.log(serve)  # type: ignore[arg-type]
        assert log.count("reaped (missed heartbeats)") == 1, log
    finally:
        server.cleanup()
