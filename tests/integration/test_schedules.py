"""Schedules on real processes: `balancer serve` fires them, `worker start` runs the runs,
`balancer schedule` registers and lists them; a leader SIGKILLed around due times leaves
exactly one run per due time, and due times past the catch-up window are skipped.

The runs are counted by the due time each was fired for (the flow's ``scheduled``
field): every due time from the first on must appear once, or be counted as skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import pytest
import redis
from balancer.common import codec
from balancer.common.keys import Keys

from balancer.schedule_store import read_all
from tests.conftest import ROOT, Processes, wait_for
from tests.integration.conftest import ThreadCluster
from tests.integration.scheduled import every_second

pytestmark = pytest.mark.integration

FLOW = "tests.integration.scheduled:every_second"


def cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", "schedule", *args],
                          cwd=ROOT, env=procs.env, capture_output=True, text=True, timeout=60)


def add(procs: Processes, *args: str) -> int:
    """Register with `balancer schedule add`; the first due time it printed (ms)."""
    done = cli(procs, "add", FLOW, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("schedule every-second: flow 'every-second', every 1s,")
    due = done.stdout.split("next due ", 1)[1].split()[0].replace("Z", "+00:00")
    return int(datetime.fromisoformat(due).timestamp() * 1000)


def runs(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every scheduled run of the namespace: scheduled, created (ms), id, state."""
    out = []
    for flow_id in client.zrange(keys.flows, 0, -1):
        raw = client.hgetall(keys.flow(flow_id.decode()))
        if b"scheduled" in raw:
            out.append({"scheduled": int(raw[b"scheduled"]), "created": int(raw[b"created"]),
                        "id": flow_id.decode(), "state": raw[b"state"].decode(),
                        "tasks": codec.unpack(raw[b"tasks"])})
    return sorted(out, key=lambda r: r["scheduled"])


def result_of(client: redis.Redis, keys: Keys, run: dict[str, Any], name: str) -> Any:
    [task_id] = [tid for tid, n in run["tasks"] if n == name]
    return codec.unpack(client.hget(keys.task(task_id), "result") or b"")


def assert_one_run_per_due_time(scheduled: list[int], first: int) -> None:
    assert scheduled, "no run"
    assert scheduled == list(range(first, scheduled[-1] + 1, 1000)), (
        f"due times fired: {[(s - first) / 1000 for s in scheduled]} (s after the first)")


def test_a_schedule_every_second_fires_runs_that_complete_on_a_real_worker(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--concurrency", "2")
    first = add(procs, "--param", "n=2")

    done = wait_for(lambda: [r for r in runs(real, keys) if r["state"] == "completed"][2:],
                    timeout=60)
    assert all(result_of(real, keys, r, "multiply") == 30 for r in done)  # (2 + 1) * 10

    listed = json.loads(cli(procs, "ls", "--json").stdout)
    [row] = listed
    assert row["id"] == "every-second" and row["schedule"] == "every 1s"
    assert row["fired"] >= 3 and row["parameters"] == {"n": 2} and row["last_flow"]
    assert row["last_state"] in ("running", "completed")
    table = cli(procs, "ls").stdout
    assert "every-second" in table and "NEXT DUE (UTC)" in table
    flows = subprocess.run([sys.executable, "-m", "balancer.cli", "flows"], cwd=ROOT,
                           env=procs.env, capture_output=True, text=True, timeout=60)
    assert done[0]["id"] in flows.stdout and "every-second" in flows.stdout
    one = subprocess.run([sys.executable, "-m", "balancer.cli", "flow", done[0]["id"]],
                         cwd=ROOT, env=procs.env, capture_output=True, text=True, timeout=60)
    assert "(schedule every-second, due " in one.stdout and "completed" in one.stdout

    removed = cli(procs, "rm", "every-second")
    assert removed.returncode == 0 and "removed" in removed.stdout
    count = len(runs(real, keys))  # a fire after the removal is refused by its script
    time.sleep(2.5)
    fired = [r["scheduled"] for r in runs(real, keys)]
    assert len(fired) == count
    assert_one_run_per_due_time(fired, first)


def _leader_pid(client: redis.Redis, keys: Keys) -> int | None:
    token = client.get(keys.leader)
    if token is None:
        return None
    dispatcher_id = token.decode().split("|", 1)[1]  # host-pid-hex
    return int(dispatcher_id.rsplit("-", 2)[1])


def _sleep_to_second(offset: float) -> None:
    """Until ``offset`` seconds past the next whole second of the wall clock (a due time
    of a 1 s interval, whose grid is whole seconds)."""
    now = time.time()
    time.sleep(max(0.0, (int(now) + 1 + offset) - now))


@pytest.mark.timeout(240)
def test_a_leader_killed_around_due_times_leaves_exactly_one_run_per_due_time(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    procs.env["BALANCER_LEADER_TTL"] = "1.0"  # a standby takes over within about a second
    serves = {p.pid: p for p in (procs.serve(), procs.serve())}
    procs.worker("--concurrency", "4")
    first = add(procs)
    wait_for(lambda: len(runs(real, keys)) >= 2, timeout=60)

    # Kill the leader just before, at and just after due times: wherever it is between
    # reading a due schedule and its script's reply. Once, stop it instead (a stalled
    # leader) and let it go on after a standby has taken over and fired.
    for sig, offset in ((signal.SIGKILL, -0.02), (signal.SIGKILL, 0.0),
                        (signal.SIGKILL, 0.003), (signal.SIGSTOP, 0.005),
                        (signal.SIGKILL, 0.01), (signal.SIGKILL, 0.03)):
        pid = wait_for(lambda: _leader_pid(real, keys), timeout=30)
        _sleep_to_second(offset)
        old = serves.pop(pid)
        old.send_signal(sig)
        if sig == signal.SIGKILL:
            old.wait(10)
        standby = procs.serve()
        serves[standby.pid] = standby
        at = time.time() * 1000
        # the next leader fires the due times missed meanwhile, and goes on
        wait_for(lambda at=at: any(r["scheduled"] > at + 1000 for r in runs(real, keys)),
                 timeout=60)
        if sig == signal.SIGSTOP:
            old.send_signal(signal.SIGCONT)  # wakes believing it leads, for a moment
            serves[old.pid] = old
            time.sleep(1.5)

    assert cli(procs, "rm", "every-second").returncode == 0
    fired = runs(real, keys)
    assert_one_run_per_due_time([r["scheduled"] for r in fired], first)
    wait_for(lambda: all(r["state"] == "completed" for r in runs(real, keys)), timeout=60)
    skipped = [r for _, r in read_all(real, keys)]
    assert skipped == []  # removed; nothing was skipped: the window is 300 s


def test_due_times_older_than_the_catch_up_window_are_skipped_and_logged(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    procs.env["BALANCER_SCHEDULE_CATCHUP"] = "2"
    first = add(procs)  # no dispatcher runs yet
    assert real.zscore(keys.schedules, "every-second") == first
    time.sleep(max(0.0, (first + 5_000) / 1000 - time.time()))  # 5 due times and more
    serve = procs.serve()
    procs.worker()
    wait_for(lambda: len(runs(real, keys)) >= 3, timeout=60)
    row = json.loads(cli(procs, "ls", "--json").stdout)[0]
    assert cli(procs, "rm", "every-second").returncode == 0

    fired = runs(real, keys)
    scheduled = [r["scheduled"] for r in fired]
    assert row["skipped"] >= 3  # at least the due times older than 2 s at the start
    # every due time from the first was skipped or fired, once
    assert_one_run_per_due_time(scheduled, first + row["skipped"] * 1000)
    # and none fired later than the window allows
    assert all(r["created"] - r["scheduled"] <= 2_000 for r in fired)
    log = procs.log(serve)
    assert f"schedule=every-second skipped {row['skipped']} due times" in log
    assert "catch-up window of 2s" in log


def test_flow_register_schedule_runs_the_flow_with_the_parameters_given(
        cluster: ThreadCluster, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    cluster.add_worker()
    sid = every_second.register_schedule(client=real, namespace=namespace,
                                          parameters={"n": 4}, schedule_id="api")
    assert sid == "api"
    done = wait_for(lambda: [r for r in runs(real, keys) if r["state"] == "completed"],
                    timeout=60)
    assert result_of(real, keys, done[0], "multiply") == 50


@pytest.mark.parametrize("args, says", [
    (("add", FLOW, "--cron", "bad cron"), "invalid cron string 'bad cron'"),
    (("add", FLOW, "--cron", "61 * * * *"), "Bad minute"),
    (("add", FLOW, "--every", "0"), "interval must be greater than 0"),
    (("add", FLOW, "--every", "-5"), "interval must be greater than 0"),
    (("add", FLOW, "--every", "1", "--cron", "* * * * *"), "not both"),
    (("add", FLOW, "--cron", "* * * * *", "--tz", "Mars/Olympus"), "unknown time zone"),
    (("add", FLOW, "--param", "m=1"), "has no parameter m"),
    (("add", FLOW, "--param", "novalue"), "is not NAME=VALUE"),
    (("add", FLOW, "--id", "has space"), "schedule id 'has space'"),
    (("add", "tests.integration.scheduled:unscheduled"), "has no schedule"),
    (("add", "tests.integration.scheduled:nothing"), "has no Flow named 'nothing'"),
    (("add", "no_such_module:flow"), "cannot import 'no_such_module'"),
    (("add", "no-colon"), "is not of the form module:flow"),
    (("rm", "no-such-schedule"), "no schedule with id 'no-such-schedule'"),
])
def test_bad_input_is_refused_with_what_was_wrong(
        procs: Processes, real: redis.Redis, namespace: str, args: tuple[str, ...],
        says: str) -> None:
    done = cli(procs, *args)
    assert done.returncode != 0
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert real.zcard(Keys(namespace).schedules) == 0


def test_a_bad_catch_up_window_is_refused(procs: Processes) -> None:
    env = dict(procs.env, BALANCER_SCHEDULE_CATCHUP="0")
    done = subprocess.run([sys.executable, "-m", "balancer.cli", "schedule", "ls"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "schedule_catchup must be at least 1" in done.stderr
    assert os.environ.get("BALANCER_SCHEDULE_CATCHUP") is None


def test_a_scheduled_flow_with_a_map_expands_and_completes_at_every_run(
        cluster: ThreadCluster, real: redis.Redis, namespace: str) -> None:
    from tests.integration.scheduled import mapped

    keys = Keys(namespace)
    cluster.add_worker()
    mapped.register_schedule(client=real, namespace=namespace)
    done = wait_for(lambda: [r for r in runs(real, keys) if r["state"] == "completed"][1:],
                    timeout=60)
    assert [result_of(real, keys, r, "total") for r in done] == [14] * len(done)
