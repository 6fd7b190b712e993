"""Chaos: thousands of tasks in layered flows while workers and the dispatcher are killed
with SIGKILL at random moments. Every flow must complete with every result right, no task
may be missing, and every duplicate execution must be explained by a kill.

The CI variant runs about 1,800 tasks with 9 kills in well under two minutes. Set
``CHAOS_SOAK=1`` for a soak run (about 10,000 tasks, dozens of kills; up to 20 minutes), and
``CHAOS_SEED=N`` to replay a seed (the seed is printed with the figures). These are not
``BALANCER_*`` variables: the product refuses unknown ones of those.

The figures are printed even without ``-s`` and recorded in the test's user properties
(``--junitxml`` keeps them).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import redis

from bench.chaos.driver import ChaosConfig, ChaosDriver
from bench.chaos.tasks import WORKER_ENV
from tests.conftest import Processes

SOAK = os.environ.get("CHAOS_SOAK", "") not in ("", "0")
SEED = int(os.environ.get("CHAOS_SEED", "20240917"))

CI_CONFIG = ChaosConfig(seed=SEED)
SOAK_CONFIG = ChaosConfig(seed=SEED, flows=20, layers=12, width=40, worker_kills=40,
                          dispatcher_kills=8, both_kills=4, gap=(1.0, 4.0), deadline=1200.0)


class ProcsStarter:
    """Starts the chaos fleet through the test's ``procs`` manager (which kills it after)."""

    def __init__(self, procs: Processes) -> None:
        self.procs = procs

    def serve(self) -> subprocess.Popen[bytes]:
        return self.procs.serve()

    def worker(self, name: str, pool: str, concurrency: int) -> subprocess.Popen[bytes]:
        self.procs.env[WORKER_ENV] = name  # copied at spawn; pool children inherit it
        return self.procs.worker("--name", name, "--pool", pool,
                                 "--concurrency", str(concurrency))


@pytest.mark.timeout(1500 if SOAK else 280)
def test_chaos_kills_lose_nothing_and_explain_every_duplicate(
    procs: Processes, real: redis.Redis, namespace: str, redis_url: str,
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
) -> None:
    config = SOAK_CONFIG if SOAK else CI_CONFIG
    # A restarted dispatcher waits for the dead one's lease to lapse: keep that short. Random
    # kills may hit one task on several workers; that is chaos, not a poison task.
    procs.env.update(BALANCER_LEADER_TTL="2.0", BALANCER_POISON_THRESHOLD="20")

    def say(line: str) -> None:
        with capsys.disabled():
            print(line, flush=True)

    say(f"\nchaos seed={config.seed} ({'soak' if SOAK else 'ci'}): {config.tasks} tasks,"
        f" {config.worker_kills + config.both_kills} worker kills,"
        f" {config.dispatcher_kills + config.both_kills} dispatcher kills planned")
    driver = ChaosDriver(real, namespace, redis_url, ProcsStarter(procs), config, say=say)
    try:
        driver.start()
        report = driver.run()
    finally:
        driver.stop()
    for line in report.lines():
        say(line)
    request.node.user_properties.append(("chaos", json.dumps(report.figures())))

    assert not report.problems, "\n".join(report.lines())
    assert report.tasks == config.tasks and report.executions >= report.tasks
    assert report.worker_kills and report.dispatcher_kills, "the chaos made no kills"
