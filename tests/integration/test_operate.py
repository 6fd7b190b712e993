"""Small things operators reach for: versions, the list of recent runs, JSON logs."""

from __future__ import annotations

import json
import subprocess
import sys

import redis
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks


def _run(procs: Processes, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=procs.env,
                          capture_output=True, text=True, timeout=60)


def test_both_commands_tell_their_version(procs: Processes) -> None:
    for module in ("balancer.cli", "balancer.worker.cli"):
        done = _run(procs, module, "--version")
        assert done.returncode == 0 and "version 0." in done.stdout, done


def test_flows_lists_recent_runs_newest_first(procs: Processes, real: redis.Redis,
                                              namespace: str) -> None:
    runs = []
    for name in ("first", "second"):
        with Flow(name) as flow:
            tasks.constant(1)
        runs.append(flow.submit(real, namespace=namespace))
    listed = json.loads(_run(procs, "balancer.cli", "flows", "--json").stdout)
    assert [r["id"] for r in listed] == [runs[1].id, runs[0].id]
    assert [r["name"] for r in listed] == ["second", "first"]
    text = _run(procs, "balancer.cli", "flows", "-n", "1").stdout
    assert runs[1].id in text and runs[0].id not in text


def test_a_worker_logs_json_lines_with_its_ids_as_fields(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    worker = procs.worker("--concurrency", "1", "--pool", "process", "--name", "jw",
                          "--log-format", "json")
    procs.serve("--log-format", "json")
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 1, timeout=30)
    with Flow("logged") as flow:
        tasks.constant(3)
    assert flow.submit(real, namespace=namespace).wait(timeout=30) == "completed"
    wait_for(lambda: "completed on worker" in procs.log(worker), timeout=10)
    lines = [json.loads(line) for line in procs.log(worker).splitlines()]
    started = next(line for line in lines if "started" in line["message"])
    assert started["worker"] == "jw" and started["level"] == "INFO"
    done = next(line for line in lines if "completed on worker" in line["message"])
    assert done["task"] and done["worker"] == "jw"  # the pool child logs JSON too
