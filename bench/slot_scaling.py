"""What a worker's slot count costs per task, process by process.

    python bench/slot_scaling.py [--slots 1,4] [--workers 1] [--seconds 5] [--rounds 2]
                                 [--json PATH]

For each slot count in turn (the counts alternate over ``--rounds``): ``balancer serve``
and ``--workers`` process-pool workers of that many slots on a private redis-server, then
single-task flows submitted one call each, back to back, for ``--seconds`` (their tasks
waited for at the end). Per task it prints the CPU (user + system) of the pool's
processes, the supervisors, serve, Redis and this client; the tasks per second; and how
the tasks spread over the pool processes: each one's share of the pool's CPU, largest
first (one slot busy and the others idle: one share near 1; the tasks going round: equal
shares).

docs/scaling.md ("More pool processes, more CPU per task") reads it: the tasks go round
the idle pool processes, and with more of them running at once than the host has cores
each task costs more. It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.tasks, so must we

import psutil  # noqa: E402
import redis  # noqa: E402

from bench import cluster_bench as cb  # noqa: E402
from bench.compare.base import PrivateRedis  # noqa: E402

KINDS = ("pool processes", "supervisors", "serve", "redis", "client")


@dataclass
class Round:
    slots: int
    tasks: int
    tasks_per_s: float
    cpu_us: dict[str, float]  # per task, by KINDS
    shares: list[float]  # each pool process's share of the pool's CPU, largest first


def _processes(cluster: cb.Cluster, workers: list[psutil.Process], redis_pid: int
               ) -> dict[str, list[psutil.Process]]:
    pool = [c for w in workers for c in w.children(recursive=True)]
    assert cluster.dispatcher is not None
    return {"pool processes": pool, "supervisors": workers,
            "serve": [psutil.Process(cluster.dispatcher.pid)],
            "redis": [psutil.Process(redis_pid)]}


def one_round(url: str, logdir: Path, slots: int, workers: int, seconds: float,
              timeout: float) -> Round:
    namespace = f"slots-{uuid.uuid4().hex[:8]}"
    os.environ["BALANCER_NAMESPACE"] = namespace
    client = redis.Redis.from_url(url, socket_timeout=cb.CLIENT_SOCKET_TIMEOUT)
    cluster = cb.Cluster(url, namespace, logdir, "WARNING")
    try:
        cluster.serve()
        procs = cluster.workers("process", slots, workers)
        cb.wait_ready(cluster, procs, slots)
        for _ in range(100):  # warm: offers read, scripts loaded, every process awake
            cb.check(cb.many_noops("warm", 1).submit(client=client).wait(timeout), "warm-up")
        watched = _processes(cluster, [psutil.Process(p.pid) for p in procs],
                             int(client.info("server")["process_id"]))
        pids = [p.pid for ps in watched.values() for p in ps]
        before = {pid: cb.cpu_seconds(pid) for pid in pids}
        client0, t0 = time.process_time(), time.perf_counter()
        runs = []
        while time.perf_counter() - t0 < seconds:
            runs.append(cb.many_noops("stream", 1).submit(client=client))
        for run in runs:
            cb.check(run.wait(timeout), f"flow {run.id}")
        wall = time.perf_counter() - t0
        spent = {pid: cb.cpu_seconds(pid) - before[pid] for pid in pids}
        n = len(runs)
        cpu_us = {kind: sum(spent[p.pid] for p in watched[kind]) / n * 1e6
                  for kind in watched}
        cpu_us["client"] = (time.process_time() - client0) / n * 1e6
        pool = sorted((spent[p.pid] for p in watched["pool processes"]), reverse=True)
        total = sum(pool) or 1.0
        # The forkserver and the resource tracker spend next to nothing: left out.
        shares = [s / total for s in pool if s / total >= 0.01]
        return Round(slots, n, n / wall, cpu_us, shares)
    finally:
        cluster.stop_all()
        cb.drop_namespace(client, namespace)
        client.close()


def report(r: Round) -> str:
    cpu = "  ".join(f"{kind} {r.cpu_us[kind]:.0f}" for kind in KINDS)
    shares = " ".join(f"{s:.2f}" for s in r.shares)
    return (f"{r.slots} slot(s): {r.tasks} tasks, {r.tasks_per_s:,.0f} tasks/s; CPU us per"
            f" task: {cpu}; pool shares: {shares}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", default="1,4",
                        help="slot counts per worker, comma-separated (default 1,4)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="write every round's figures there")
    args = parser.parse_args(argv)
    counts = [int(s) for s in args.slots.split(",") if s.strip()]
    if not counts or min(counts) < 1 or args.workers < 1 or args.rounds < 1:
        parser.error("--slots, --workers and --rounds must be at least 1")
    logdir = Path(tempfile.mkdtemp(prefix="slot-scaling-"))
    server = PrivateRedis(logdir).start()
    print(f"slot scaling: slots={counts} workers={args.workers} seconds={args.seconds}"
          f" rounds={args.rounds} load={os.getloadavg()[0]:.2f} logs={logdir}", flush=True)
    rounds: list[Round] = []
    try:
        for r in range(args.rounds):
            for slots in counts if r % 2 == 0 else reversed(counts):
                rounds.append(one_round(server.url, logdir, slots, args.workers,
                                        args.seconds, args.timeout))
                print(report(rounds[-1]), flush=True)
    finally:
        server.stop()
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rounds], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
