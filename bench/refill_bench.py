"""How long a worker's freed slot waits for its next task while a backlog waits: one
worker of ``--slots`` process slots, a private Redis and ``balancer serve``, and
``--tasks`` sleeps of ``--min`` to ``--max`` seconds (a fixed seed), one submit each,
all at once, so that most wait in the queue (prefetch is off for tasks this long: each
is leased into a free slot).

Per run it prints the gaps between one slot's task and its next (median, p90, max, in
ms: the refill's round trip, and any wait for the dispatcher to hear of the freed slot)
and the makespan over what greedy list scheduling in submit order would take with no
overhead (1.00: none lost).

    python bench/refill_bench.py [--slots 4] [--tasks 40] [--min 0.1] [--max 0.5]
                                 [--runs 2] [--json PATH]

It runs the code of the interpreter running it (``balancer`` as installed there, its
processes started from that checkout's folder: bench/own_cluster.py), so another venv's
python compares another commit. It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import heapq
import random
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

SEED = 1


def greedy(durations: list[float], slots: int) -> float:
    """The makespan of list scheduling in order, with no overhead."""
    free = [0.0] * slots
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    with own_cluster(("--concurrency", str(args.slots), "--queue", ours_tasks.QUEUE)) as cluster:
        client = redis.Redis.from_url(cluster.url)
        record = redis.Redis.from_url(cluster.record_url)
        with Flow("warm") as flow:
            ours_tasks.noop("warm", "0", 0.0)
        flow.submit(client)
        wait_until(lambda: record.llen("warm"), "a first task")
        rng = random.Random(SEED)
        durations = [rng.uniform(args.min, args.max) for _ in range(args.tasks)]
        t0 = time.time()
        for i, d in enumerate(durations):
            with Flow("backlog") as flow:
                ours_tasks.sleep("runs", str(i), d)
            flow.submit(client)
        wait_until(lambda: record.llen("runs") >= len(durations), "the backlog to run",
                   timeout=sum(durations) + 60)
        runs: dict[str, list[tuple[float, float]]] = {}
        for raw in record.lrange("runs", 0, -1):
            _, start, finish, _, pid = raw.decode().split("|")
            runs.setdefault(pid, []).append((float(start), float(finish)))
    gaps = sorted(b[0] - a[1] for slot in runs.values()
                  for a, b in zip(sorted(slot), sorted(slot)[1:]))
    span = max(f for slot in runs.values() for _, f in slot) - t0
    return {"gap_ms_p50": statistics.median(gaps) * 1000,
            "gap_ms_p90": gaps[int(len(gaps) * 0.9)] * 1000, "gap_ms_max": gaps[-1] * 1000,
            "makespan_s": span, "greedy_s": greedy(durations, args.slots),
            "over_greedy": span / greedy(durations, args.slots)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--min", type=float, default=0.1, help="shortest sleep, seconds")
    parser.add_argument("--max", type=float, default=0.5, help="longest sleep, seconds")
    add_run_options(parser)
    args = parser.parse_args(argv)
    print(f"code: {CHECKOUT}; 1 worker x {args.slots} slots, {args.tasks} sleeps of"
          f" {args.min}-{args.max} s")
    print(f"{'run':>4} {'gap p50 ms':>11} {'p90':>7} {'max':>7} {'makespan s':>11}"
          f" {'greedy s':>9} {'over greedy':>12}")
    return report_runs(args, one_run, lambda n, row: (
        f"{n:>4} {row['gap_ms_p50']:>11.1f} {row['gap_ms_p90']:>7.1f}"
        f" {row['gap_ms_max']:>7.1f} {row['makespan_s']:>11.2f} {row['greedy_s']:>9.2f}"
        f" {row['over_greedy']:>12.2f}"))

if __name__ == "__main__":
    sys.exit(main())
