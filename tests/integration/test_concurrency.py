"""Prefect's global concurrency limits on a real cluster: `with concurrency("db")` blocks
in tasks on worker processes of both pools never hold more slots than the limit, and a
holder killed with its slots frees them when its lease ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, concurrency_limits, set_concurrency_limit
from balancer.concurrency import ConcurrencyTimeout, concurrency
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks

HOLDER = """
import sys, time
from balancer.concurrency.sync import concurrency
with concurrency("db", redis_url=sys.argv[1], namespace=sys.argv[2]):
    print("holding", flush=True)
    time.sleep(600)
"""


def _on_both_pools(procs: Processes, real: redis.Redis, keys: Keys, process_slots: int
                   ) -> None:
    """`balancer serve`, a thread-pool worker of 3 slots and a process-pool one,
    registered."""
    procs.serve()
    procs.worker("--concurrency", "3", "--pool", "thread")
    procs.worker("--concurrency", str(process_slots))
    wait_for(lambda: real.zcard(keys.workers) >= 2, timeout=30)


def test_blocks_in_tasks_on_both_pools_never_exceed_the_limit(
        procs: Processes, real: redis.Redis, namespace: str, redis_url: str) -> None:
    keys = Keys(namespace)
    set_concurrency_limit("db", 1, real, namespace=namespace)
    _on_both_pools(procs, real, keys, process_slots=2)
    counter = f"{namespace}:db-running"
    try:
        with Flow("limited") as f:
            runs = [tasks.limited(redis_url, counter, 0.15) for _ in range(6)]
        run = f.run(timeout=120, client=real, namespace=namespace, quiet=True)
        assert run.state == "completed"
        assert [run.result(r) for r in runs] == [1] * 6  # each saw itself alone
        workers = {real.hget(keys.task(run.ids[r]), "worker") for r in runs}
        assert len(workers) == 2  # both pools took part
    finally:
        real.delete(counter, f"{counter}:seen")
    [row] = concurrency_limits(real, namespace=namespace)
    assert (row.limit, row.held) == (1, 0)  # every slot given back


def test_a_holder_killed_with_its_slot_frees_it_when_its_lease_ends(
        real: redis.Redis, namespace: str, redis_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALANCER_CONCURRENCY_LEASE", "1")
    set_concurrency_limit("db", 1, real, namespace=namespace)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, redis_url, namespace],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        # Held for longer than its lease: it renews it.
        with (pytest.raises(ConcurrencyTimeout),
              concurrency("db", timeout_seconds=2.5, client=real, namespace=namespace)):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        with concurrency("db", timeout_seconds=30, client=real, namespace=namespace):
            assert concurrency_limits(real, namespace=namespace)[0].held == 1  # ours
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)


def test_operators_set_list_and_remove_limits_from_the_shell(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "balancer.cli", "limit", *args],
                              cwd=ROOT, env=procs.env, capture_output=True, text=True,
                              timeout=60)

    assert cli("ls").stdout.strip().startswith("no concurrency limits")
    done = cli("set", "db", "2")
    assert done.returncode == 0 and done.stdout.strip() == "concurrency limit db: 2 slots"
    with concurrency("db", client=real, namespace=namespace):
        assert json.loads(cli("ls", "--json").stdout) == [
            {"name": "db", "limit": 2, "held": 1, "slot_decay_per_second": 0.0}]
        assert "db" in cli("ls").stdout and "1/2 slots held" in cli("ls").stdout
    assert cli("set", "db", "0").returncode == 2  # not a count of slots
    assert cli("rm", "db").stdout.strip() == "concurrency limit db: removed"
    assert concurrency_limits(real, namespace=namespace) == []
    decaying = cli("set", "api", "10", "--slot-decay-per-second", "2.5")
    assert decaying.stdout.strip() == ("concurrency limit api: 10 slots, rate_limit's"
                                       " decaying 2.5 a second")
    assert "0/10 slots held, decaying 2.5/s" in cli("ls").stdout
    refused = cli("set", "api", "10", "--slot-decay-per-second", "-1")
    assert refused.returncode == 2 and "--slot-decay-per-second" in refused.stderr
    assert cli("set", "api", "10").returncode == 0  # without the option: no decay
    assert concurrency_limits(real, namespace=namespace)[0].slot_decay_per_second == 0.0


def test_rate_limit_in_tasks_on_both_pools_lets_the_decay_rate_through(
        procs: Processes, real: redis.Redis, namespace: str, redis_url: str) -> None:
    """Limit 2, 5 a second: the first two calls go at once, each later one when the slot
    before it has decayed, 200 ms after the one before, cluster-wide. Only the lower
    bound is asserted (a noisy host only delays calls), on Redis's clock: the k-th call
    through (in the order they were) cannot be through before k - 1 decays past the
    earliest wait's start."""
    keys = Keys(namespace)
    set_concurrency_limit("api", 2, real, slot_decay_per_second=5, namespace=namespace)
    _on_both_pools(procs, real, keys, process_slots=3)
    granted = f"{namespace}:api-granted"
    try:
        with Flow("rate-limited") as f:
            runs = [tasks.rate_limited(redis_url, granted) for _ in range(8)]
        run = f.run(timeout=120, client=real, namespace=namespace, quiet=True)
        assert run.state == "completed"
        noted = [tuple(map(int, n.split())) for n in real.lrange(granted, 0, -1)]
        assert sorted(run.result(r) for r in runs) == sorted(after for _, after in noted)
        assert len({real.hget(keys.task(run.ids[r]), "worker") for r in runs}) == 2
    finally:
        real.delete(granted)
    start = min(before for before, _ in noted)
    through = sorted(after for _, after in noted)
    for k, at in enumerate(through[2:], start=2):
        assert at - start >= (k - 1) * 200, (k, at - start)
    [row] = concurrency_limits(real, namespace=namespace)
    assert row.held <= 2 and row.slot_decay_per_second == 5.0
