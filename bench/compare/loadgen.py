"""The open-loop submitter of the latency-under-load workload, run as its own process.

    python -m bench.compare.loadgen --system huey --broker-url URL --record-url URL \\
        --key rec:load:... --arrivals arrivals.json --out submitted.json

It submits one no-op per call at the times in ``arrivals.json`` (seconds from its start:
a Poisson stream, see ``poisson_arrivals``) and writes, per task, the wall-clock time its
submit call began. It runs apart from the harness, which watches the results, so that
neither one's pauses hold the other back: a slow submit delays the calls after it (that
lateness is reported), it never waits for results.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.compare.base import Job

WARMUP = 3  # submits before the clock starts: connections, script loading, imports


def poisson_arrivals(rate: float, seconds: float, rng: random.Random) -> list[float]:
    """Arrival times in [0, seconds) of a Poisson process of ``rate`` per second: the
    gaps are independent exponential draws of mean 1/rate."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive (got {rate}, {seconds})")
    out: list[float] = []
    at = rng.expovariate(rate)
    while at < seconds:
        out.append(at)
        at += rng.expovariate(rate)
    return out


def tag(i: int) -> str:
    return str(i)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="open-loop submitter of bench/compare")
    parser.add_argument("--system", required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--record-url", required=True)
    parser.add_argument("--key", required=True, help="record list the tasks push to")
    parser.add_argument("--arrivals", type=Path, required=True, help="JSON list of seconds")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layout", default="2x1")
    args = parser.parse_args(argv)

    from bench.compare.base import parse_layouts
    from bench.compare.run import load

    [layout] = parse_layouts(args.layout)
    arrivals: list[float] = json.loads(args.arrivals.read_text())
    system = load(args.system, Path(tempfile.gettempdir()), args.record_url)
    system.broker_url = args.broker_url
    system.connect(layout)
    try:
        for i in range(WARMUP):
            system.submit([Job("noop", args.key + ":warmup", f"w{i}")])
        started: list[float] = []
        late: list[float] = []
        p0 = time.perf_counter()
        for i, at in enumerate(arrivals):
            wait = at - (time.perf_counter() - p0)
            if wait > 0:
                time.sleep(wait)
            started.append(time.time())
            late.append(max(0.0, -wait))
            system.submit([Job("noop", args.key, tag(i))])
        took = time.perf_counter() - p0
    finally:
        system.disconnect()
    args.out.write_text(json.dumps({"started": started, "late": late, "seconds": took}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
