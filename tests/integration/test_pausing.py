"""Prefect's pause_flow_run / resume_flow_run on a real cluster: a @flow function's body
waits where it is until `balancer flow resume` (another process) resumes it with input,
a stale or second resume changes nothing, and an unresumed pause times out
(balancer/pausing.py)."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.settings import Settings

from balancer import FlowPauseTimeout, flow, pause_flow_run, resume_flow_run
from balancer.dashboard.server import Dashboard
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks


@dataclass
class Decision:
    factor: int
    note: str = ""


@flow
def approval(x: int) -> list[Any]:
    first = tasks.square(x)
    decision = pause_flow_run(wait_for_input=Decision, timeout=60)
    return [first * decision.factor, decision.note]


@flow
def impatient() -> None:
    pause_flow_run(timeout=0.5)


@flow
async def waits_async() -> Any:
    return await pause_flow_run(timeout=60)


def _cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", "flow", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)


def _paused_run(real: redis.Redis, keys: Keys) -> str:
    """The id of the run that holds a pause mark, once one does."""
    def find() -> str | None:
        for flow_id in real.zrange(keys.flows, 0, -1):
            if real.hget(keys.flow(flow_id.decode()), "paused"):
                return str(flow_id.decode())
        return None
    return str(wait_for(find, timeout=30))


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # the test reads what it raised
            out["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _paused(procs: Processes, real: redis.Redis, namespace: str, fn: Any,
            call: Any) -> tuple[threading.Thread, dict[str, Any], str]:
    """A cluster, and ``call(fn)`` in a thread of its own, ``fn`` bound to the cluster, once
    its run is paused: the thread, what the call gives (``_in_thread``), the run's id."""
    procs.serve_and_worker(real, namespace)
    bound = fn.with_options(redis_url=procs.env["BALANCER_REDIS_URL"], namespace=namespace)
    thread, out = _in_thread(lambda: call(bound))
    return thread, out, _paused_run(real, Keys(namespace))


def test_a_paused_run_waits_until_resumed_from_another_process_with_input(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    thread, out, run_id = _paused(procs, real, namespace, approval, lambda fn: fn(4))
    shown = _cli(procs, run_id).stdout
    assert "paused since" in shown and f"balancer flow resume {run_id}" in shown, shown
    app = Dashboard(real, Settings(namespace=namespace), "127.0.0.1", 0)
    app.start()
    try:
        with urllib.request.urlopen(f"{app.url}api/flow/{run_id}", timeout=30) as resp:
            assert json.load(resp)["paused_ms"] > 0
    finally:
        app.stop()
    # A resume of an earlier pause (another token) is dropped: the run waits on.
    real.rpush(keys.flow_resume(run_id), b"stale|\x80")
    thread.join(3)
    assert thread.is_alive()
    done = _cli(procs, "resume", run_id, "--input", "factor=3", "--input", "note=ok")
    assert done.returncode == 0 and "resumed" in done.stdout, done.stderr
    thread.join(30)
    assert out == {"value": [48, "ok"]}
    assert real.hget(keys.flow(run_id), "paused") is None
    assert not real.exists(keys.flow_resume(run_id))
    again = _cli(procs, "resume", run_id)
    assert again.returncode == 1 and f"flow run {run_id} is not paused" in again.stderr


def test_a_pause_no_one_resumes_times_out_and_fails_the_run(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace)
    keys = Keys(namespace)
    fn = impatient.with_options(redis_url=procs.env["BALANCER_REDIS_URL"], namespace=namespace)
    state = fn(return_state=True)
    assert state.is_failed()
    with pytest.raises(FlowPauseTimeout, match=r"was not resumed within 0\.5s"):
        state.result()
    assert real.hget(keys.flow(state.flow_run_id), "paused") is None


def test_an_async_flow_awaits_its_pause(procs: Processes, real: redis.Redis,
                                        namespace: str) -> None:
    thread, out, run_id = _paused(procs, real, namespace, waits_async,
                                  lambda fn: asyncio.run(fn()))
    resume_flow_run(run_id, {"go": True}, client=real, namespace=namespace)
    thread.join(30)
    assert out == {"value": {"go": True}}


def test_pausing_outside_a_flow_function_is_refused() -> None:
    with pytest.raises(RuntimeError, match="call it in the function's body"):
        pause_flow_run(timeout=1)


def test_the_dashboard_resumes_a_paused_run_with_its_token(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    thread, out, run_id = _paused(procs, real, namespace, waits_async,
                                  lambda fn: asyncio.run(fn()))
    token = "pause-test-token-0123456789"
    app = Dashboard(real, Settings(namespace=namespace, dashboard_token=token), "127.0.0.1", 0)
    app.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
        conn.request("POST", "/api/action/flow.resume", body=json.dumps({"flow": run_id}),
                     headers={"Content-Type": "application/json",
                              "X-Balancer-Token": token})
        resp = conn.getresponse()
        said = json.loads(resp.read())
        conn.close()
    finally:
        app.stop()
    assert resp.status == 200 and said["message"] == f"flow {run_id} resumed"
    thread.join(30)
    assert out == {"value": None}  # resumed with no input
