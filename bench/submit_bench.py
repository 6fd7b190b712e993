"""Benchmark the client's submit of single-task flows: `balancer serve` and one worker
(1 process-pool slot) on local Redis, then rounds of back-to-back one-task submits.

Per round it prints, for N submit calls (each builds a one-task ``Flow`` and submits it,
as ``bench/compare``'s submit workload does for us):

- the client's CPU per call (``time.process_time``, in us): robust to a busy machine,
  where calls/s is not;
- calls per second (wall clock);
- then M single-task flows submitted and waited for one after another, p50/p99 ms.

``--pyspy PATH`` samples the client during the first round's submit loop with py-spy
(``pip install py-spy``) and writes collapsed stacks (``--format raw``) to PATH. It prints
figures and never asserts speed. Run from anywhere:

    python bench/submit_bench.py [--calls N] [--singles M] [--rounds R] [--signing]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balancer import Flow

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.tasks, so must we

import redis  # noqa: E402

from bench import cluster_bench as cb  # noqa: E402

PYSPY_RATE = 2000  # samples per second


def one_task_flow() -> Flow:
    """A one-task flow, built anew for each call as a client would."""
    return cb.many_noops("bench-submit", 1)


def submit_round(client: redis.Redis, n: int, timeout: float,
                 pyspy: Path | None = None) -> dict[str, float]:
    """N one-task submits back to back: client CPU us per call and calls/s; then every
    run waited for (not timed), so that the next round starts on an idle cluster."""
    spy = None
    if pyspy is not None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        spy = subprocess.Popen([exe, "record", "--pid", str(os.getpid()), "--rate",
                                str(PYSPY_RATE), "--format", "raw", "--output", str(pyspy),
                                "--nonblocking"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
    c0, t0 = time.process_time(), time.perf_counter()
    runs = [one_task_flow().submit(client=client) for _ in range(n)]
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    for run in runs:
        cb.check(run.wait(timeout), f"flow {run.id}")
    return {"cpu_us_per_call": cpu / n * 1e6, "calls_per_s": n / wall}


def latency_round(client: redis.Redis, m: int, timeout: float) -> dict[str, float]:
    """Submit-to-done ms of M single-task flows, one after another on an idle worker."""
    out = []
    for _ in range(m):
        flow = one_task_flow()
        start = time.perf_counter()
        cb.check(flow.submit(client=client).wait(timeout), "single flow")
        out.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": cb.percentile(out, 50), "p99_ms": cb.percentile(out, 99)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=2000, help="N, submit calls per round")
    parser.add_argument("--singles", type=int, default=200, help="M, single flows waited for")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait per flow, s")
    parser.add_argument("--signing", action="store_true",
                        help="the client signs every task (BALANCER_SIGNING_KEYS)")
    parser.add_argument("--pyspy", type=Path, help="collapsed stacks of the first round")
    parser.add_argument("--json", type=Path, help="also write the rounds here")
    args = parser.parse_args(argv)
    if min(args.calls, args.singles, args.rounds) < 1:
        parser.error("--calls, --singles and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    logdir = Path(tempfile.mkdtemp(prefix="submit-bench-"))
    os.environ["BALANCER_NAMESPACE"] = namespace  # Flow.submit(client=...) reads it
    client = redis.Redis.from_url(args.redis_url, socket_timeout=cb.CLIENT_SOCKET_TIMEOUT)
    client.ping()
    cluster = cb.Cluster(args.redis_url, namespace, logdir, "WARNING")
    if args.signing:
        cluster.env["BALANCER_SIGNING_KEYS"] = os.environ["BALANCER_SIGNING_KEYS"] = (
            "benchmark-signing-key-" + uuid.uuid4().hex)
    print(f"submit bench: namespace={namespace} calls={args.calls} singles={args.singles}"
          f" rounds={args.rounds} signing={'on' if args.signing else 'off'}"
          f" load={os.getloadavg()[0]:.2f} logs={logdir}", flush=True)
    rounds: list[dict[str, Any]] = []
    try:
        cluster.serve()
        with cb.running_workers(cluster, "process", 1):
            for r in range(args.rounds):
                for _ in range(20):  # warm: the offer read, the scripts loaded
                    cb.check(one_task_flow().submit(client=client).wait(args.timeout), "warm-up")
                figures = submit_round(client, args.calls, args.timeout,
                                       args.pyspy if r == 0 else None)
                figures.update(latency_round(client, args.singles, args.timeout))
                rounds.append(figures)
                print("round {}: cpu {cpu_us_per_call:.1f} us/call  {calls_per_s:.0f} calls/s"
                      "  p50 {p50_ms:.3f} ms  p99 {p99_ms:.3f} ms".format(r, **figures),
                      flush=True)
    finally:
        cluster.stop_all()
        cb.drop_namespace(client, namespace)
        client.close()
    medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print("median: cpu {cpu_us_per_call:.1f} us/call  {calls_per_s:.0f} calls/s"
          "  p50 {p50_ms:.3f} ms  p99 {p99_ms:.3f} ms".format(**medians))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "median": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
