"""What a process pool's preload of the task modules saves: one worker of ``--slots``
process slots, whose ``--import`` module loads ``--payload-mb`` megabytes of objects at
import (bench/heavy_tasks.py), started with ``--preload`` and with ``--no-preload`` in
turns on a private Redis. Per start: the seconds from the command to the worker
registered, then, idle, the proportional set size (PSS) of the worker's whole tree
(supervisor, forkserver, pool processes) and per slot. With the preload the forkserver
imports the module once and the pool processes share it; without, each imports its own.

    python bench/preload_bench.py [--slots 4] [--payload-mb 40] [--runs 3] [--json PATH]

It prints figures and never asserts them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
from balancer.common.keys import Keys

# This file's bench/, after ``balancer`` is imported from the running python's venv.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare.procs import MB, tree, tree_pss
from bench.redis_servers import RedisServer, wait_until

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "preload-bench"
SETTLE = 1.0  # seconds idle after registering, before memory is read


def one_start(url: str, slots: int, payload_mb: int, preload: bool) -> tuple[float, float]:
    """(seconds to register, PSS of the worker's tree in MB) of one worker start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "BENCH_"))}
    env.update(BALANCER_REDIS_URL=url, BALANCER_NAMESPACE=NAMESPACE, PYTHONPATH=str(ROOT),
               BENCH_PAYLOAD_MB=str(payload_mb))
    client = redis.Redis.from_url(url)
    began = time.monotonic()
    worker = subprocess.Popen(
        [sys.executable, "-m", "balancer.worker.cli", "start", "--queue", "heavy",
         "--concurrency", str(slots), "--import", "bench.heavy_tasks",
         "--preload" if preload else "--no-preload"],
        cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: client.zcard(Keys(NAMESPACE).workers) >= 1, "the worker to register")
        registered = time.monotonic() - began
        time.sleep(SETTLE)
        if len(tree(worker.pid)) < slots + 1:
            raise RuntimeError("the worker's pool is not all there")
        return registered, tree_pss(worker.pid) / MB
    finally:
        worker.terminate()
        worker.wait(30)
        client.flushdb()  # the bench's own server: the next start registers afresh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--payload-mb", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    server = RedisServer().start()
    figures: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    try:
        for _ in range(args.runs):
            for preload in (True, False):  # in turns: a slow spell hits both
                figures[preload].append(one_start(server.url, args.slots, args.payload_mb,
                                                  preload))
    finally:
        server.cleanup()
    print(f"worker of {args.slots} process slots, task module of {args.payload_mb} MB,"
          f" medians of {args.runs} starts")
    for preload in (True, False):
        starts, pss = zip(*figures[preload], strict=True)
        print(f"  {'--preload   ' if preload else '--no-preload'}  registered after"
              f" {statistics.median(starts):5.2f} s   PSS {statistics.median(pss):6.1f} MB"
              f" ({statistics.median(pss) / args.slots:5.1f} MB per slot)")
    with_, without = (statistics.median(p for _, p in figures[k]) for k in (True, False))
    print(f"  PSS without / with preload: {without / with_:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "slots": args.slots, "payload_mb": args.payload_mb,
            **{name: {"registered_s": [r for r, _ in figures[k]],
                      "pss_mb": [p for _, p in figures[k]]}
               for name, k in (("preload", True), ("no_preload", False))}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
