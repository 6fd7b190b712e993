"""The side-by-side benchmark runs end to end on our system and reports every figure.

It asserts that figures come out, never how fast they are. The harness starts its own
redis-servers, so the test needs ``redis-server`` on PATH (in CI a missing one fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# workload -> a figure it must report as a number
EXPECTED = {
    "throughput": "tasks_per_s",
    "latency": "p50_ms",
    "prefetch_trap": "over_reference",
    "makespan": "over_greedy",
    "uneven": "makespan_s",
    "priority": "worst_low_wait_s",
    "priority_aging": "worst_low_wait_s",
    "layered": "redis_cmds_per_task",
    "idle": "cmds_per_s",
    "dispatcher_scale": "assignments_per_s",
}


@pytest.mark.integration
def test_quick_comparison_of_our_system_reports_every_workload(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but redis-server is not on PATH; the benchmark starts its own")
        pytest.skip("redis-server is not on PATH; the benchmark starts private servers")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("workload 4 pins a worker per core and needs 2 cores")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "BENCH_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare.run", "--quick", "--systems", "ours",
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [out] = tmp_path.glob("*.json")
    results = json.loads(out.read_text())["results"]["ours"]
    for workload, figure in EXPECTED.items():
        figures = results.get(workload)
        assert figures is not None, f"no {workload} in {sorted(results)}"
        assert "error" not in figures, (workload, figures.get("traceback"))
        assert isinstance(figures.get(figure), (int, float)), (workload, figures)
        assert not figures.get("partial"), (workload, figures)
    assert "ours/best" in proc.stdout and "1 throughput, tasks/s" in proc.stdout
