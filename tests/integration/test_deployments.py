"""Prefect 2/3's ``flow.serve``: real serve processes (as a user's script runs one), a real
dispatcher and worker. A deployment's schedule fires, a run asked of it from another
process runs, several processes serving one deployment fire each due time once, a stop
is clean, requests a serve process may not run are dropped, and ``limit`` holds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from balancer.common import codec
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_list
from balancer.common.settings import Settings

from balancer import run_deployment
from balancer.dashboard.server import Dashboard
from balancer.deployments import Request
from tests.conftest import ROOT, Processes, wait_for

MODULE = "tests.integration.deployed_flows"


def _runs_of(client: redis.Redis, keys: Keys, deployment: str) -> dict[str, str]:
    """The state of every recorded run of ``deployment``, by id."""
    out = {}
    for flow_id in as_bytes_list(client.zrange(keys.flows, 0, -1)):
        dep, state = client.hmget(keys.flow(flow_id.decode()), ["deployment", "state"])
        if dep == deployment.encode():
            out[flow_id.decode()] = (state or b"").decode()
    return out


def _cli(procs: Processes, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "balancer.cli", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_served_flow_runs_on_its_schedule_and_when_asked_from_another_process(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace)
    keys = Keys(namespace)
    server = procs.start(MODULE, "fast", "1", name="deploy")
    wait_for(lambda: sum(s == "completed" for s in _runs_of(
        real, keys, "etl/fast").values()) >= 2, timeout=30)
    run = run_deployment("etl/fast", parameters={"n": 21}, timeout=60, client=real,
                         namespace=namespace)
    assert run.state == "completed" and run.flow_run().result("double") == 42
    seen = ["etl/fast", "fast"]  # runtime.deployment, in the flow's body and in a task
    assert run.flow_run().result("both") == [seen, seen]
    [listed] = json.loads(_cli(procs, "deployment", "ls", "--json"))
    assert (listed["deployment"], listed["flow"], listed["schedule"]) == (
        "etl/fast", "etl", "every 1s")
    assert listed["alive"] and listed["parameters"] == {"n": 5} and listed["waiting"] == 0
    shown = _cli(procs, "flow", run.id)
    assert "(deployment etl/fast)" in shown
    app = Dashboard(real, Settings(namespace=namespace), "127.0.0.1", 0)
    app.start()
    try:
        with urllib.request.urlopen(f"{app.url}api/overview", timeout=30) as resp:
            [on_page] = json.load(resp)["deployments"]
    finally:
        app.stop()
    assert (on_page["deployment"], on_page["alive"], on_page["schedule"]) == (
        "etl/fast", True, "every 1s")
    asked = _cli(procs, "deployment", "run", "etl/fast", "--param", "n=4", "--wait",
                 "--timeout", "60")
    assert asked.strip().endswith(": completed"), asked
    assert procs.stop(server) == 0  # SIGTERM: a clean stop
    assert real.hlen(keys.deployments) == 0  # its beat is gone with it
    log = procs.log(server)
    assert "starts (scheduled for" in log and "starts (asked for)" in log, log
    assert "no deployment is served" in _cli(procs, "deployment", "ls")


def test_processes_serving_one_deployment_fire_each_due_time_once(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace)
    keys = Keys(namespace)
    began = time.monotonic()
    servers = [procs.start(MODULE, "twice", "1", name="deploy") for _ in range(2)]
    wait_for(lambda: real.hlen(keys.deployments) == 2, timeout=30)
    wait_for(lambda: len(_runs_of(real, keys, "etl/twice")) >= 4, timeout=30)
    for server in servers:
        assert procs.stop(server) == 0
    window = time.monotonic() - began
    dues = list(real.scan_iter(match=keys.deployment_due("etl/twice")))
    runs = _runs_of(real, keys, "etl/twice")
    assert len(runs) == len(dues) <= window + 1  # once per due time, not once per process
    assert set(runs.values()) == {"completed"}


def test_requests_a_serve_process_may_not_run_are_dropped_and_said_so(
        procs: Processes, real: redis.Redis, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With signing keys, an unsigned request (anyone who can write to Redis could push
    one) is dropped; so is one naming a run that exists, or that is no request."""
    procs.env["BALANCER_SIGNING_KEYS"] = "deploy-secret-0123456789abcdef0123"
    monkeypatch.setenv("BALANCER_SIGNING_KEYS", "deploy-secret-0123456789abcdef0123")
    procs.serve_and_worker(real, namespace)
    keys = Keys(namespace)
    server = procs.start(MODULE, "asked", "0", name="deploy")
    wait_for(lambda: real.hlen(keys.deployments) == 1, timeout=30)
    signed = run_deployment("etl/asked", timeout=60, client=real, namespace=namespace)
    assert signed.state == "completed"
    queue = keys.deployment_runs("etl/asked")
    real.rpush(queue, Request("aaaaaaaaaaaaaaaaaaaaaaaa", {"n": 1}, 1).encode())
    real.rpush(queue, Request(signed.id, {}, 1, "forged").encode())
    real.rpush(queue, codec.pack(["not", "a", "request"]))
    wait_for(lambda: procs.log(server).count("a run request was dropped") == 3, timeout=30)
    log = procs.log(server)
    assert "run aaaaaaaaaaaaaaaaaaaaaaaa is not signed with one of" in log
    assert f"run {signed.id} is not signed" in log and "not a run request" in log
    assert list(_runs_of(real, keys, "etl/asked")) == [signed.id]  # nothing else ran
    assert procs.stop(server) == 0


def test_a_forged_request_for_a_run_that_exists_is_dropped(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace)
    keys = Keys(namespace)
    server = procs.start(MODULE, "again", "0", name="deploy")
    wait_for(lambda: real.hlen(keys.deployments) == 1, timeout=30)
    first = run_deployment("etl/again", timeout=60, client=real, namespace=namespace)
    real.rpush(keys.deployment_runs("etl/again"), Request(first.id, {"n": 9}, 1).encode())
    wait_for(lambda: f"a run {first.id} exists already" in procs.log(server), timeout=30)
    assert first.flow_run().result("double") == 10  # left as it was
    assert procs.stop(server) == 0


def test_limit_bounds_the_runs_of_a_serve_process_at_once(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = tmp_path / "naps.log"
    procs.env["TEST_LOG"] = str(log)
    procs.serve_and_worker(real, namespace, "--concurrency", "2")
    keys = Keys(namespace)
    server = procs.start(MODULE, "slow", "0", "1", name="deploy")
    wait_for(lambda: real.hlen(keys.deployments) == 1, timeout=30)
    runs = [run_deployment("slow/slow", {"seconds": 0.5}, timeout=0, client=real,
                           namespace=namespace) for _ in range(2)]
    for run in runs:
        assert run.wait(60) == "completed"
    marks = [line.split()[0] for line in log.read_text().splitlines()]
    assert marks == ["start", "end", "start", "end"]  # one run at a time
    assert procs.stop(server) == 0


def test_a_run_asked_of_a_deployment_nobody_serves_waits_and_says_so(
        procs: Processes, real: redis.Redis, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """The run waits in Redis for a serve process; the asker is told none serves it now,
    and a later serve process takes it."""
    procs.serve_and_worker(real, namespace)
    run = run_deployment("etl/later", {"n": 3}, timeout=0, client=real, namespace=namespace)
    assert "no serve process serves it now" in caplog.text and run.state == "scheduled"
    with pytest.raises(TimeoutError, match=r"was not taken by a serve process within 0\.2s"):
        run.wait(0.2)
    server = procs.start(MODULE, "later", "0", name="deploy")
    assert run.wait(60) == "completed" and run.flow_run().result("double") == 6
    assert procs.stop(server) == 0


def test_a_second_ctrl_c_ends_the_runs_going_on_as_crashed_not_left_running(
        procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """The first SIGINT stops taking work and waits for the runs; the second ends them: the
    run's record ends failed once its running task ends, instead of running for good."""
    import signal

    procs.env["TEST_LOG"] = str(tmp_path / "naps.log")
    procs.serve_and_worker(real, namespace)
    keys = Keys(namespace)
    server = procs.start(MODULE, "slow-stop", "0", name="deploy")
    wait_for(lambda: real.hlen(keys.deployments) == 1, timeout=30)
    run = run_deployment("slow/slow-stop", {"seconds": 3}, timeout=0, client=real,
                         namespace=namespace)
    wait_for(lambda: (tmp_path / "naps.log").exists(), timeout=30)  # its task runs
    server.send_signal(signal.SIGINT)
    wait_for(lambda: "waiting for 1 run(s) to end" in procs.log(server), timeout=30)
    server.send_signal(signal.SIGINT)
    server.wait(30)
    assert "1 run(s) ended as crashed" in procs.log(server), procs.log(server)
    wait_for(lambda: run.state == "failed", timeout=30)


def test_a_serve_process_runs_more_flows_than_its_pool_has_connections(
        procs: Processes, real: redis.Redis, namespace: str, redis_url: str) -> None:
    """Each run goes on a thread of its own, whose own connection counted against the
    process's pool for good (redis-py's max_connections, 100 by default): past that many
    runs, the next one hung `running` for good (seen at run 98). Here the cap is 8."""
    procs.serve_and_worker(real, namespace)
    sep = "&" if "?" in redis_url else "?"
    procs.env["BALANCER_REDIS_URL"] = f"{redis_url}{sep}max_connections=8"
    server = procs.start(MODULE, "many", "0", name="deploy")
    for n in range(20):
        run = run_deployment("etl/many", parameters={"n": n}, timeout=60, client=real,
                             namespace=namespace)
        assert run.state == "completed" and run.flow_run().result("double") == 2 * n
    assert "Too many connections" not in procs.log(server)
