"""What BALANCER_MIN_REPLICAS=1 costs one round trip: submit latency with and without WAIT.

A submit and an acknowledgement both end in one script call; with durability on, WAIT rides
in the same round trip and returns once the replica has acknowledged the write. This times
single-task submits (no worker runs them: only the round trip is measured) on a private
master with one replica, alternating blocks with and without durability so that the load
of the machine falls on both alike, and prints the medians and their ratio. The end-to-end
figures are ``bench/cluster_bench.py --replica [--min-replicas 1]``'s.

    python bench/durability_bench.py [--submits N] [--json PATH]

It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from balancer.common.settings import Settings  # noqa: E402

from balancer import Flow  # noqa: E402
from balancer.submit import submit_flow  # noqa: E402
from bench.cluster_bench import drop_namespace, replicated  # noqa: E402
from bench.tasks import noop  # noqa: E402

BLOCK = 100


def one_flow() -> Flow:
    with Flow("durability") as flow:
        noop(0)
    return flow


def timed_submits(client: redis.Redis, settings: Settings, n: int) -> list[float]:
    """Milliseconds each of ``n`` submits took."""
    out = []
    for _ in range(n):
        flow = one_flow()
        start = time.perf_counter()
        submit_flow(client, settings, flow)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=2000, help="per setting")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="durability-bench-"))
    master, replica = replicated(logdir)
    namespace = f"dur-{uuid.uuid4().hex[:8]}"
    base = Settings(redis_url=master.url, namespace=namespace)
    settings = {0: base, 1: base.replace(min_replicas=1)}
    times: dict[int, list[float]] = {0: [], 1: []}
    client = redis.Redis.from_url(master.url)
    try:
        timed_submits(client, settings[1], BLOCK)  # warm up: scripts loaded, connections
        for _ in range(max(1, args.submits // BLOCK)):
            for replicas in (0, 1):
                times[replicas] += timed_submits(client, settings[replicas], BLOCK)
        drop_namespace(client, namespace)
    finally:
        client.close()
        replica.stop()
        master.stop()
    figures = {}
    for replicas, values in times.items():
        ordered = sorted(values)
        figures[f"min_replicas={replicas}"] = {
            "submits": len(values), "p50_ms": round(statistics.median(values), 3),
            "p90_ms": round(ordered[int(0.9 * len(ordered)) - 1], 3)}
    ratio = figures["min_replicas=1"]["p50_ms"] / figures["min_replicas=0"]["p50_ms"]
    figures["p50_ratio"] = round(ratio, 2)  # type: ignore[assignment]
    print("submit latency of a single-task flow, master + 1 replica on loopback:")
    for name, row in figures.items():
        print(f"  {name:<16} {row}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
