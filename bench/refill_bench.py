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
processes started from that checkout's folder), so another venv's python compares
another commit. It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

import balancer
from balancer import Flow

# The checkout whose code runs: its bench/ holds the tasks the worker imports.
CHECKOUT = Path(balancer.__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from bench.compare import ours_tasks  # noqa: E402
from bench.redis_servers import RedisServer, wait_until  # noqa: E402

SEED = 1


def greedy(durations: list[float], slots: int) -> float:
    """The makespan of list scheduling in order, with no overhead."""
    free = [0.0] * slots
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    server = RedisServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env.update(BALANCER_REDIS_URL=server.url,
               BENCH_RECORD_URL=server.url.rsplit("/", 1)[0] + "/1",
               PYTHONPATH=str(CHECKOUT))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "balancer.cli", "serve"],
                                      cwd=CHECKOUT, env=env, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "balancer.worker.cli", "start", "--concurrency",
             str(args.slots), "--pool", "process", "--import", "bench.compare.ours_tasks",
             "--queue", ours_tasks.QUEUE], cwd=CHECKOUT, env=env, stderr=subprocess.DEVNULL))
        client = redis.Redis.from_url(server.url)
        record = redis.Redis.from_url(env["BENCH_RECORD_URL"])
        wait_until(lambda: client.keys("*workers*"), "the worker to register")
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
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--min", type=float, default=0.1, help="shortest sleep, seconds")
    parser.add_argument("--max", type=float, default=0.5, help="longest sleep, seconds")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    rows = []
    print(f"code: {CHECKOUT}; 1 worker x {args.slots} slots, {args.tasks} sleeps of"
          f" {args.min}-{args.max} s")
    print(f"{'run':>4} {'gap p50 ms':>11} {'p90':>7} {'max':>7} {'makespan s':>11}"
          f" {'greedy s':>9} {'over greedy':>12}")
    for n in range(1, args.runs + 1):
        row = one_run(args)
        rows.append(row)
        print(f"{n:>4} {row['gap_ms_p50']:>11.1f} {row['gap_ms_p90']:>7.1f}"
              f" {row['gap_ms_max']:>7.1f} {row['makespan_s']:>11.2f} {row['greedy_s']:>9.2f}"
              f" {row['over_greedy']:>12.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
