"""Prefect's artifacts on a real cluster: made by a task on a real worker of either pool and
by a @flow function, listed by `balancer flow ID`, `balancer artifact ls|inspect` and the
dashboard's API (balancer/artifacts.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
import redis
from balancer.common.settings import Settings

from balancer.artifacts import Artifact
from balancer.dashboard.server import Dashboard
from tests.conftest import ROOT, Processes
from tests.integration import artifact_tasks

ROWS = [{"region": "eu", "rows": 7}, {"region": "us", "rows": 5}]


def _cli(procs: Processes, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "balancer.cli", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_artifacts_made_in_a_run_are_listed_with_it_and_found_by_key(
        procs: Processes, real: redis.Redis, namespace: str, pool: str) -> None:
    procs.serve_and_worker(real, namespace, "--pool", pool,
                           "--import", "tests.integration.artifact_tasks")
    flow_fn = artifact_tasks.reporting.with_options(redis_url=procs.env["BALANCER_REDIS_URL"],
                                                    namespace=namespace)
    state = flow_fn(ROWS, return_state=True)
    assert state.result() == 2
    shown = _cli(procs, "flow", state.flow_run_id)
    assert "artifacts (4; balancer artifact inspect ID):" in shown, shown
    assert "link dash-link: https://example.com/dash" in shown and "(by the flow)" in shown
    assert "markdown daily-report: # Daily report (the day's load)" in shown
    assert "table loaded-rows: 2 rows" in shown and "progress: 100% (loading)" in shown
    report = Artifact.get("daily-report", client=real, namespace=namespace)
    assert report is not None and report.flow_run_id == state.flow_run_id
    assert report.task_run_id and report.data == "# Daily report\n2 rows loaded"
    table = json.loads(_cli(procs, "artifact", "inspect", "loaded-rows"))
    assert table["data"] == {"columns": ["region", "rows"], "rows": [["eu", 7], ["us", 5]]}
    listed = _cli(procs, "artifact", "ls")
    assert {"dash-link", "daily-report", "loaded-rows"} <= {
        line.split()[2].rstrip(":") for line in listed.splitlines()}
    app = Dashboard(real, Settings(namespace=namespace), "127.0.0.1", 0)
    app.start()
    try:
        with urllib.request.urlopen(f"{app.url}api/flow/{state.flow_run_id}",
                                    timeout=30) as resp:
            page = json.load(resp)
    finally:
        app.stop()
    assert [a["kind"] for a in page["artifacts"]] == ["link", "progress", "table", "markdown"]
