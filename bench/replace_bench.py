"""How soon a pool child killed at its task's timeout is replaced: one worker of
``--slots`` process slots, a private Redis and ``balancer serve``. Per round, every slot
but one is held by a sleep of ``--hold`` seconds, the last one runs a task past its
timeout (0.5 s: its child is killed), and once its flow has failed a no-op is submitted,
which only the killed child's replacement can run. The figure is the time from the
failure, as the client saw it, to the no-op's start: the replacement's start-up, then
its first fetch.

A worker forks its children from a forkserver that has imported their code, itself
forked from the supervisor (worker/zygote.py); where that forkserver is a new interpreter
instead, a one-slot worker spawns each child (worker/childwatch.py: pool_context). At the
commit before the fork from the supervisor, ``--slots 1`` took 498 and 508 ms (p50 of two
runs of 5 kills), after it 21 and 19 ms; ``--slots 2`` 18 and 16 ms, then 13 and 14.

    python bench/replace_bench.py [--slots 2] [--rounds 5] [--hold 3] [--runs 2] [--json PATH]

It runs the code of the interpreter running it (bench/own_cluster.py), so another venv's
python compares another commit. It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis

from balancer import Flow

# This file's bench/, after ``balancer`` is imported from the running python's venv (which
# may hold another checkout: bench/own_cluster.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import ours_tasks
from bench.own_cluster import CHECKOUT, add_run_options, own_cluster, report_runs
from bench.redis_servers import wait_until


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    with own_cluster(("--concurrency", str(args.slots), "--queue", ours_tasks.QUEUE)) as cluster:
        client = redis.Redis.from_url(cluster.url)
        record = redis.Redis.from_url(cluster.record_url)
        gaps = []
        for r in range(args.rounds):
            holders = []
            for i in range(args.slots - 1):
                with Flow("hold") as flow:
                    node = ours_tasks.sleep("held", f"{r}-{i}", args.hold)
                holders.append((flow.submit(client), node))
            for held, node in holders:  # running: a task is marked so after 20 ms
                wait_until(lambda: held.task_state(node) == "running",  # noqa: B023
                           "a holder to start")
            with Flow("stuck") as flow:
                ours_tasks.stuck("stuck", str(r), args.hold * 2)
            run = flow.submit(client)
            if run.wait(timeout=60) != "failed":
                raise RuntimeError("the task past its timeout did not fail")
            error = run.error(flow.nodes[0])
            if error is None or "timeout" not in f"{error.type} {error.message}".lower():
                raise RuntimeError(f"the task failed otherwise than at its timeout: {error}")
            failed_at = time.time()
            with Flow("next") as flow:
                ours_tasks.noop("next", str(r), 0.0)
            flow.submit(client)
            wait_until(lambda: record.llen("next") >= r + 1, "the no-op to run")  # noqa: B023
            _, start, *_ = record.lindex("next", -1).decode().split("|")  # type: ignore[union-attr]
            gaps.append(float(start) - failed_at)
            for held, _ in holders:
                held.wait(timeout=60)
    return {"gap_ms_p50": statistics.median(gaps) * 1000, "gap_ms_max": max(gaps) * 1000,
            "gaps_ms": [round(g * 1000, 1) for g in gaps]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hold", type=float, default=3.0,
                        help="seconds the other slots are held each round")
    add_run_options(parser)
    args = parser.parse_args(argv)
    print(f"code: {CHECKOUT}; 1 worker x {args.slots} process slots, {args.rounds} kills")
    print(f"{'run':>4} {'failure to next start, ms: p50':>31} {'max':>7}")
    return report_runs(args, one_run, lambda n, row: (
        f"{n:>4} {row['gap_ms_p50']:>31.1f} {row['gap_ms_max']:>7.1f}"))


if __name__ == "__main__":
    sys.exit(main())
