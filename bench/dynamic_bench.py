"""Benchmark a @flow function (Prefect 2/3's dynamic style) on a real cluster: `balancer
serve` plus two thread-pool `worker start` processes on local Redis.

Measures, inside one @flow call each:

- calls: M plain calls ``noop(i)`` one after another (each submitted, run, waited for):
  per-call latency p50/p99;
- map: ``noop.map(range(N))``: time for map to return (the submit), then until every
  result is in;
- chain: K submits each passing the previous future (a task released by the client's
  watcher when its upstream completes): time per link.

It prints figures and never asserts speed. Run from anywhere:

    python bench/dynamic_bench.py [--quick] [--calls M] [--map N] [--chain K] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.tasks, so must we

from balancer.common.urls import redact  # noqa: E402

from balancer import flow  # noqa: E402
from bench.cluster_bench import Cluster, drop_namespace, percentile, running_workers  # noqa: E402
from bench.tasks import noop  # noqa: E402


def measure(url: str, namespace: str, calls: int, mapped: int, chain: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}

    @flow(name="bench-calls", redis_url=url, namespace=namespace)
    def sequential() -> list[float]:
        took = []
        for i in range(calls):
            t0 = time.perf_counter()
            noop(i)
            took.append((time.perf_counter() - t0) * 1000)
        return took

    @flow(name="bench-map", redis_url=url, namespace=namespace)
    def fan_out() -> tuple[float, float]:
        t0 = time.perf_counter()
        futures = noop.map(list(range(mapped)))
        submitted = time.perf_counter() - t0
        futures.result()
        return submitted, time.perf_counter() - t0

    @flow(name="bench-chain", redis_url=url, namespace=namespace)
    def linked() -> float:
        t0 = time.perf_counter()
        future = noop.submit(0)
        for _ in range(chain - 1):
            future = noop.submit(future)
        future.result()
        return time.perf_counter() - t0

    sequential.with_options(name="bench-warmup")()
    took = sequential()
    figures["calls"] = calls
    figures["call_p50_ms"] = round(percentile(took, 50), 2)
    figures["call_p99_ms"] = round(percentile(took, 99), 2)
    submitted, total = fan_out()
    figures["map"] = mapped
    figures["map_submit_s"] = round(submitted, 3)
    figures["map_end_to_end_s"] = round(total, 3)
    figures["map_tasks_per_s"] = round(mapped / total, 1)
    figures["chain"] = chain
    figures["chain_ms_per_link"] = round(linked() * 1000 / chain, 2)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--map", type=int, default=2000)
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 calls, map 200,"
                        " chain 20")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.map, args.chain = 30, 200, 20
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    logdir = Path(tempfile.mkdtemp(prefix="dynamic-bench-"))
    print(f"dynamic bench: redis={redact(args.redis_url)} namespace={namespace}"
          f" workers=2 x concurrency {args.concurrency} (thread pool) cores={os.cpu_count()}"
          f" logs={logdir}", flush=True)
    cluster = Cluster(args.redis_url, namespace, logdir, "WARNING")
    import redis

    client = redis.Redis.from_url(args.redis_url)
    try:
        cluster.serve()
        with running_workers(cluster, "thread", args.concurrency):
            figures = measure(args.redis_url, namespace, args.calls, args.map, args.chain)
    finally:
        cluster.stop_all()
        drop_namespace(client, namespace)
        client.close()
    for name, value in figures.items():
        print(f"  {name:<20} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
