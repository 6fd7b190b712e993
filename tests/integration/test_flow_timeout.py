"""A @flow function's timeout_seconds (Prefect 2/3): past it the function is stopped where
it is, not run again by its retries, and its run fails with FlowRunTimeoutError (a
TimeoutError), on a real Redis. Only the order of events is asserted (the function waits
on a task that sleeps well past the timeout), never how fast."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import pytest
import redis
from balancer.common.keys import Keys

from balancer import FlowRunTimeoutError, flow
from tests.conftest import Processes, wait_for

pytestmark = pytest.mark.integration


def test_a_script_s_flow_past_its_timeout_is_stopped_and_its_run_fails(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """The script's main thread is stopped while it waits on a task of 3 s (a timer's
    signal); the run is failed once that task, which runs on, has ended."""
    procs.serve_and_worker(real, namespace)
    script = procs.start("tests.integration.timed_flow", "0.5", "3", name="script")
    assert script.wait(120) == 0, procs.log(script)
    said: dict[str, Any] = json.loads(procs.log(script).strip().splitlines()[-1])
    assert (said["name"], said["type"], said["attempts"]) == ("TimedOut", "FAILED", 1), said
    assert said["error"] == "FlowRunTimeoutError" and said["timeout_error"], said
    assert said["told"] == ["TimedOut"], said  # on_failure, as for any failed run
    assert "exceeded its timeout of 0.5 second(s)" in said["message"]
    flow_key = Keys(namespace).flow(said["run"])
    wait_for(lambda: real.hget(flow_key, "state") == b"failed", timeout=60)
    assert b"FlowRunTimeoutError" in (real.hget(flow_key, "error") or b"")


@pytest.mark.usefixtures("real")  # the namespace is dropped afterwards
@pytest.mark.parametrize("where", ["main thread", "another thread"])
def test_a_flow_looping_in_python_past_its_timeout_is_stopped_in_any_thread(
        redis_url: str, namespace: str, where: str) -> None:
    """Under pytest (whose own timer is armed) and in a thread of its own, the function is
    stopped by an exception raised in its thread: its `except Exception` and its retries
    do not keep it going."""
    attempts: list[int] = []

    @flow(redis_url=redis_url, namespace=namespace, timeout_seconds=0.3, retries=3)
    def spins() -> None:
        attempts.append(1)
        while True:
            with contextlib.suppress(Exception):  # its own handler does not swallow it
                time.sleep(0.01)

    raised: list[BaseException] = []

    def call() -> None:
        try:
            spins()
        except BaseException as exc:  # what the call raised, checked below
            raised.append(exc)

    if where == "main thread":
        call()
    else:
        thread = threading.Thread(target=call)
        thread.start()
        thread.join(60)
    [error] = raised
    assert isinstance(error, FlowRunTimeoutError) and isinstance(error, TimeoutError)
    assert attempts == [1]
    time.sleep(0.5)  # nothing lands after the call returned


@pytest.mark.usefixtures("real")
def test_a_flow_ending_within_its_timeout_gives_its_value(redis_url: str,
                                                          namespace: str) -> None:
    @flow(redis_url=redis_url, namespace=namespace, timeout_seconds=30)
    def quick(x: int) -> int:
        return x + 1

    assert quick(1) == 2
    with pytest.raises(ValueError, match="timeout must be positive"):
        flow(timeout_seconds=0)(lambda: None)
    assert quick.with_options(timeout_seconds=5).options.timeout_seconds == 5


