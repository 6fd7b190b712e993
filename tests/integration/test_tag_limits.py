"""Tag limits on a real cluster: `balancer serve` and two worker processes with several
slots each. Tasks tagged "db" under a limit of 2 never run more than 2 at once, wait
rather than fail, and the untagged tasks behind them go on; a worker killed while it
holds a tagged lease gives the tag's place back once reaped, and the flow completes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import redis
from balancer.common.keys import Keys

from balancer import Flow, flow, set_tag_limit, tag_limits, tags
from tests.conftest import Processes, wait_for
from tests.integration import tasks


def _cli(procs: Processes, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "balancer.cli", *args], env=procs.env,
                          check=True, timeout=60, capture_output=True, text=True)
    return done.stdout


def test_tasks_of_a_limited_tag_never_exceed_the_limit_and_others_are_not_held_up(
        procs: Processes, real: redis.Redis, namespace: str, redis_url: str) -> None:
    keys = Keys(namespace)
    assert _cli(procs, "tag", "limit", "db", "2").strip() == "tag db: limit 2"
    procs.serve()
    for name in ("w1", "w2"):
        procs.worker("--queue", "default", "--concurrency", "3", "--pool", "thread",
                     "--name", name)
    wait_for(lambda: real.zcard(keys.workers) >= 2, timeout=30)
    counter = f"{namespace}:db-running"  # the tasks' own notes, deleted at the end
    try:
        _limit_of_two(procs, real, keys, namespace, redis_url, counter)
    finally:
        real.delete(counter, f"{counter}:seen")


def _limit_of_two(procs: Processes, real: redis.Redis, keys: Keys, namespace: str,
                  redis_url: str, counter: str) -> None:
    with Flow("tagged") as flow:
        tagged = [tasks.db_counted(redis_url, counter, 0.3) for _ in range(8)]
    run = flow.submit(real, namespace=namespace)
    with Flow("plain") as flow:  # queued after (behind) the tagged tasks still waiting
        plain = [tasks.square(i) for i in range(4)]
    other = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=120) == "completed"
    assert other.wait(timeout=120) == "completed"
    seen = [int(n) for n in real.lrange(f"{counter}:seen", 0, -1)]
    assert len(seen) == 8 and max(seen) <= 2
    assert [other.result(n) for n in plain] == [0, 1, 4, 9]
    # From the records: never more than 2 tagged runs overlapped.
    spans = []
    for node in tagged:
        started, finished = real.hmget(keys.task(run.ids[node]), ["started", "finished"])
        spans.append((int(started), int(finished)))
    for started, _ in spans:
        assert sum(1 for s, f in spans if s <= started < f) <= 2
    # The untagged tasks did not wait behind the tagged ones.
    last_tagged_start = max(s for s, _ in spans)
    for node in plain:
        assert int(real.hget(keys.task(other.ids[node]), "finished")) <= last_tagged_start
    assert not real.hget(keys.tag_inflight, "db")  # every place given back
    shown = json.loads(_cli(procs, "status", "--json"))
    assert shown["tags"] == [{"name": "db", "limit": 2, "leased": 0}]
    assert "db" in _cli(procs, "tag", "ls")


def test_a_worker_killed_holding_a_tagged_lease_gives_its_place_back(
        procs: Processes, real: redis.Redis, namespace: str, redis_url: str) -> None:
    keys = Keys(namespace)
    set_tag_limit("db", 1, real, namespace=namespace)
    assert [(t.name, t.limit) for t in tag_limits(real, namespace=namespace)] == [("db", 1)]
    procs.serve()
    workers = {name: procs.worker("--queue", "default", "--concurrency", "2", "--pool",
                                  "thread", "--name", name) for name in ("w1", "w2")}
    wait_for(lambda: real.zcard(keys.workers) >= 2, timeout=30)
    pids, counter = f"{namespace}:pids", f"{namespace}:db-running"
    try:
        _killed(procs, real, keys, namespace, redis_url, pids, counter, workers)
    finally:
        real.delete(pids, counter, f"{counter}:seen")


def _killed(procs: Processes, real: redis.Redis, keys: Keys, namespace: str, redis_url: str,
            pids: str, counter: str, workers: dict[str, subprocess.Popen[bytes]]) -> None:
    with Flow("killed") as flow:
        hung = tasks.db_hang_first_run(redis_url, pids)
    run = flow.submit(real, namespace=namespace)
    first_pid = int(wait_for(lambda: real.lindex(pids, 0), timeout=30))
    assert real.hget(keys.tag_inflight, "db") == b"1"  # the hung run holds the place
    with Flow("waiting") as flow:
        after = [tasks.db_counted(redis_url, counter, 0.1) for _ in range(3)]
    later = flow.submit(real, namespace=namespace)
    wait_for(lambda: real.zcard(keys.queue("default")) == 3, timeout=30)
    time.sleep(0.5)  # dispatch rounds pass: they wait for the tag, with slots free
    assert real.llen(f"{counter}:seen") == 0 and real.zcard(keys.queue("default")) == 3
    assert set(later.why().values()) == {
        "tag db is at its concurrency limit (1/1 leased; balancer tag ls)"}
    victim = next(p for p in workers.values() if p.pid == first_pid)
    procs.stop(victim, signal.SIGKILL)
    assert run.wait(timeout=120) == "completed"
    assert later.wait(timeout=120) == "completed"
    assert [int(p) for p in real.lrange(pids, 0, -1)][1] != first_pid  # ran again elsewhere
    assert real.hget(keys.task(run.ids[hung]), "lost") == b"1"
    assert [later.result(n) for n in after] == [1, 1, 1]  # one at a time, as the limit says
    assert not real.hget(keys.tag_inflight, "db")
    set_tag_limit("db", None, real, namespace=namespace)
    assert tag_limits(real, namespace=namespace) == []


def test_a_tags_block_tags_the_runs_made_in_it_and_their_tag_s_limit_holds(
        procs: Processes, real: redis.Redis, namespace: str, redis_url: str) -> None:
    """Prefect's `with tags("db"):` around calls of an untagged task: in a @flow function
    and in `with Flow(...)`, the runs made in the block carry the tag, and its limit of 1
    holds them to one at a time; a run made outside the block is not tagged."""
    keys = Keys(namespace)
    set_tag_limit("db", 1, real, namespace=namespace)
    procs.serve()
    procs.worker("--queue", "default", "--concurrency", "3", "--pool", "thread")
    wait_for(lambda: real.zcard(keys.workers) >= 1, timeout=30)
    counter = f"{namespace}:db-running"
    try:
        @flow(redis_url=redis_url, namespace=namespace)
        def loads() -> list[int]:
            with tags("db"):
                futures = [tasks.counted.submit(redis_url, counter, 0.2) for _ in range(4)]
            return [f.result() for f in futures]

        assert loads() == [1, 1, 1, 1]  # each saw itself alone
        with Flow("blocks") as f:
            with tags("db", "etl"):
                inside = tasks.counted(redis_url, counter, 0.2)
            outside = tasks.square(3)
        run = f.run(timeout=60, client=real, namespace=namespace, quiet=True)
        assert run.state == "completed"
        assert real.hget(keys.task(run.ids[inside]), "tags") == b"db,etl"
        assert real.hget(keys.task(run.ids[outside]), "tags") is None
        seen = [int(n) for n in real.lrange(f"{counter}:seen", 0, -1)]
        assert len(seen) == 5 and max(seen) == 1
    finally:
        real.delete(counter, f"{counter}:seen")
