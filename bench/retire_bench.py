"""What retiring pool processes costs (``worker start --max-tasks-per-child N``): one
worker of ``--slots`` process slots, a private Redis and ``balancer serve``, per bound a
flow of ``--tasks`` no-ops (each records itself) run to its end; the bounds alternate
round by round. No-ops are the worst case: the replacements' start-up is all there is
besides them.

    python bench/retire_bench.py [--slots 2] [--bounds 0,100,1000] [--tasks 4000] [--runs 3]
                                 [--json PATH]

It prints tasks per second per bound and each bound's median against no bound. It runs the
code of the interpreter running it (bench/own_cluster.py) and never asserts speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import redis

from balancer import Flow

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as replace_bench

from bench.compare import ours_tasks
from bench.own_cluster import CHECKOUT, add_run_options, own_cluster

WARM = 200  # tasks run first: the dispatcher learns they are short, and batches them


def one_round(slots: int, bound: int, tasks: int) -> float:
    """Tasks per second of one flow of ``tasks`` no-ops, on a fresh cluster."""
    options = ["--concurrency", str(slots), "--queue", ours_tasks.QUEUE]
    if bound:
        options += ["--max-tasks-per-child", str(bound)]
    with own_cluster(options) as cluster:
        client = redis.Redis.from_url(cluster.url)
        for name, n in (("warm", WARM), ("timed", tasks)):
            with Flow(name) as flow:
                for i in range(n):
                    ours_tasks.noop(name, str(i))
            start = time.perf_counter()
            if flow.submit(client).wait(timeout=300) != "completed":
                raise RuntimeError(f"the {name} flow did not complete")
        return tasks / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--bounds", default="0,100,1000",
                        help="comma-separated --max-tasks-per-child values (0: none)")
    parser.add_argument("--tasks", type=int, default=4000)
    add_run_options(parser, runs=3)
    args = parser.parse_args(argv)
    bounds = [int(b) for b in args.bounds.split(",")]
    print(f"code: {CHECKOUT}; 1 worker x {args.slots} process slots, {args.tasks} no-ops")
    rates: dict[int, list[float]] = {b: [] for b in bounds}
    for run in range(1, args.runs + 1):
        for bound in bounds:
            rates[bound].append(one_round(args.slots, bound, args.tasks))
            print(f"run {run} bound {bound:>6}: {rates[bound][-1]:>8.0f} tasks/s", flush=True)
    base = statistics.median(rates[bounds[0]])
    for bound in bounds:
        median = statistics.median(rates[bound])
        print(f"bound {bound:>6}: median {median:>8.0f} tasks/s, {median / base:.2f} of bound"
              f" {bounds[0]}")
    if args.json:
        args.json.write_text(json.dumps({"tasks_per_s": {str(b): r for b, r in rates.items()}},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
