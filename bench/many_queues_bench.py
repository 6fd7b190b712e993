"""What many queues cost: a queue per tenant. For each queue count, a private cluster of
one ``worker start --queue '*'`` of ``--slots`` process slots; one single-task flow per
queue, all submitted at once (each queue new to the dispatcher), run to their end; then
``--flows`` single-task flows one after another, round the queues (all known, all empty
but the one submitted to), each waited for.

    python bench/many_queues_bench.py [--queues 1,3000] [--flows 300] [--slots 2]
                                      [--runs 1] [--json PATH]

It prints, per queue count, how long the first flows took (per flow), the latency of the others
(p50, p90) and the dispatcher's CPU time per flow, then each figure against the first
queue count's. Run it with another venv's python to measure that venv's code
(bench/own_cluster.py). It never asserts speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from balancer import Flow

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as retire_bench

from bench.compare import ours_tasks
from bench.own_cluster import CHECKOUT, add_run_options, own_cluster


def one_flow(queue: str, i: int) -> Flow:
    """A flow of one no-op, in ``queue``."""
    with Flow(f"tenant-{i}") as flow:
        dataclasses.replace(ours_tasks.noop, queue_name=queue)("many", str(i))
    return flow


def one_run(queues: int, flows: int, slots: int) -> dict[str, float]:
    with own_cluster(["--queue", "*", "--concurrency", str(slots)]) as cluster:
        client = redis.Redis.from_url(cluster.url)
        names = [f"tenant-{i}" for i in range(queues)]
        start = time.perf_counter()
        runs = [one_flow(q, i).submit(client) for i, q in enumerate(names)]
        for run in runs:
            if run.wait(timeout=900) != "completed":
                raise RuntimeError(f"flow {run.id} did not complete")
        first = (time.perf_counter() - start) / queues
        serve = psutil.Process(cluster.procs[0].pid)
        cpu = sum(serve.cpu_times()[:2])
        took = []
        for i in range(flows):
            flow = one_flow(names[i % queues], i)
            began = time.perf_counter()
            if flow.submit(client).wait(timeout=60) != "completed":
                raise RuntimeError("a single-task flow did not complete")
            took.append(time.perf_counter() - began)
        cpu = sum(serve.cpu_times()[:2]) - cpu
        took.sort()
        return {"first_ms": 1000 * first, "p50_ms": 1000 * statistics.median(took),
                "p90_ms": 1000 * took[int(0.9 * (len(took) - 1))],
                "serve_cpu_ms": 1000 * cpu / flows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", default="1,3000", help="comma-separated queue counts")
    parser.add_argument("--flows", type=int, default=300)
    parser.add_argument("--slots", type=int, default=2)
    add_run_options(parser, runs=1)
    args = parser.parse_args(argv)
    counts = [int(q) for q in args.queues.split(",")]
    print(f"code: {CHECKOUT}; 1 worker serving '*' x {args.slots} process slots")
    figures: dict[int, list[dict[str, float]]] = {q: [] for q in counts}
    for run in range(1, args.runs + 1):
        for q in counts:
            row = one_run(q, args.flows, args.slots)
            figures[q].append(row)
            print(f"run {run} {q:>6} queues: first flows {row['first_ms']:6.2f} ms each, then"
                  f" p50 {row['p50_ms']:6.2f} ms p90 {row['p90_ms']:6.2f} ms, serve CPU"
                  f" {row['serve_cpu_ms']:6.2f} ms a flow", flush=True)

    def median(q: int, name: str) -> float:
        return statistics.median(r[name] for r in figures[q])

    def against(q: int, name: str) -> str:
        """``q``'s figure over the first count's: none when that one read zero, as the
        dispatcher's CPU time can over a few flows (the kernel counts it in clock ticks)."""
        first = median(counts[0], name)
        return f"{name} {median(q, name) / first:.2f}x" if first else f"{name} n/a (0 at first)"

    base = counts[0]
    for q in counts:
        ratios = ", ".join(against(q, name) for name in ("first_ms", "p50_ms", "serve_cpu_ms"))
        print(f"{q:>6} queues against {base}: {ratios}")
    if args.json:
        out: dict[str, Any] = {"args": vars(args) | {"json": str(args.json)},
                               "figures": {str(q): rows for q, rows in figures.items()}}
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
