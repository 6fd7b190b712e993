"""Benchmark concurrency limits on one Redis, from one client process, with no worker:

- blocks a second: back-to-back ``with concurrency(...)`` blocks on one client (each takes
  a slot and gives it back: two round trips and the limit's read);
- rate_limit: THREADS threads each making CALLS calls through a limit of LIMIT slots
  decaying RATE a second; past the burst of LIMIT calls, the calls a second that went
  through (the rate is the goal) and the gaps between them (1 / RATE is the goal).

It prints figures and never asserts speed. Run from anywhere:

    python bench/limits_bench.py [--blocks N] [--limit L] [--rate R] [--threads T]
                                 [--calls K] [--redis-url URL] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import redis

    from balancer.concurrency import concurrency, rate_limit, set_concurrency_limit

    client = redis.Redis.from_url(args.redis_url)
    namespace = f"limits-bench-{uuid.uuid4().hex[:8]}"
    where: dict[str, Any] = {"client": client, "namespace": namespace}
    figures: dict[str, Any] = {}
    try:
        set_concurrency_limit("db", 2, client, namespace=namespace)
        for _ in range(min(20, args.blocks)):  # warm: scripts loaded, connection made
            with concurrency("db", **where):
                pass
        began = time.perf_counter()
        for _ in range(args.blocks):
            with concurrency("db", **where):
                pass
        took = time.perf_counter() - began
        figures["blocks_per_s"] = round(args.blocks / took)
        print(f"blocks: {args.blocks} in {took:.2f}s, {figures['blocks_per_s']} a second"
              f" ({took / args.blocks * 1e6:.0f} us each)")

        set_concurrency_limit("api", args.limit, client, slot_decay_per_second=args.rate,
                              namespace=namespace)
        through: list[float] = []
        lock = threading.Lock()
        start = time.monotonic()

        def calls() -> None:
            for _ in range(args.calls):
                rate_limit("api", **where)
                with lock:
                    through.append(time.monotonic() - start)

        threads = [threading.Thread(target=calls) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        through.sort()
        steady = through[args.limit - 1:]  # from the burst's last call on
        gaps = [b - a for a, b in itertools.pairwise(steady)]
        if gaps:
            figures["rate_per_s"] = round(len(gaps) / (steady[-1] - steady[0]), 2)
            figures["gap_ms"] = {"min": round(min(gaps) * 1000, 1),
                                 "median": round(statistics.median(gaps) * 1000, 1),
                                 "max": round(max(gaps) * 1000, 1)}
            print(f"rate_limit: {len(through)} calls through a limit of {args.limit} at"
                  f" {args.rate:g}/s: {figures['rate_per_s']} a second past the burst, gaps"
                  f" {figures['gap_ms']['min']}-{figures['gap_ms']['max']} ms (median"
                  f" {figures['gap_ms']['median']}; the goal {1000 / args.rate:.1f})")
    finally:
        for key in client.scan_iter(f"{{{namespace}}}*"):
            client.delete(key)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
