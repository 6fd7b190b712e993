"""Where one partition ends: CPU per task of Redis's main thread and of the dispatcher.

One namespace lives in one Redis slot, is served by one Redis main thread, and is led by
one dispatcher: each is a single core at most. This runs `balancer serve` and worker
processes on a private Redis, pushes flows of no-op tasks through them at full speed, and
reads the CPU each used (Redis: INFO cpu, its main thread; processes: /proc). Whichever of
the two needs more CPU per task sets the ceiling of one partition: one core divided by it.
On a machine with few cores the workers compete for the same cores, so tasks/s measured
here is below that ceiling; the CPU per task is what carries over.

    python bench/partition_limit.py [--tasks N] [--workers W] [--concurrency C]
                                    [--partitions P] [--json PATH]

With ``--partitions P`` the namespace has P partitions (one `balancer serve` leads them
all, a dispatch loop each; the flows spread over them): the dispatcher's CPU is then that
of all its loops together.

It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.tasks, so must we

import redis  # noqa: E402
from balancer.common.keys import Keys  # noqa: E402

from bench.cluster_bench import (  # noqa: E402
    Cluster,
    check,
    cpu_seconds,
    many_noops,
    running_workers,
)
from bench.compare.base import PrivateRedis  # noqa: E402


@dataclass
class Figures:
    tasks: int
    workers: int
    concurrency: int
    seconds: float
    tasks_per_s: float
    redis_cpu_us_per_task: float  # Redis's main thread, user + system
    dispatcher_cpu_us_per_task: float
    workers_cpu_us_per_task: float  # supervisors and pool children together
    redis_cmds_per_task: float
    ceiling_tasks_per_s: float  # one core / the larger of Redis's and the dispatcher's CPU


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])) + float(
        info.get("used_cpu_user_main_thread", info["used_cpu_user"]))


def calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))


def tree_cpu(pid: int) -> float:
    """CPU of a process and its children (a worker's pool processes)."""
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_cpu(int(c)) for c in children)


def measure(client: redis.Redis, cluster: Cluster, n: int, flows: int, workers: int,
            concurrency: int, timeout: float) -> Figures:
    worker_pids = [p.pid for p in cluster.procs if p is not cluster.dispatcher]
    dispatcher = cluster.dispatcher.pid if cluster.dispatcher else 0
    check(many_noops("warmup", workers * concurrency * 4).submit(client=client).wait(timeout),
          "warm-up")
    r0, d0, w0, c0 = (redis_cpu(client), cpu_seconds(dispatcher),
                      sum(tree_cpu(p) for p in worker_pids), calls(client))
    start = time.perf_counter()
    runs = [many_noops(f"limit-{i}", n // flows).submit(client=client) for i in range(flows)]
    for run in runs:
        check(run.wait(timeout), f"flow {run.id}")
    seconds = time.perf_counter() - start
    total = (n // flows) * flows
    redis_us = (redis_cpu(client) - r0) * 1e6 / total
    dispatcher_us = (cpu_seconds(dispatcher) - d0) * 1e6 / total
    workers_us = (sum(tree_cpu(p) for p in worker_pids) - w0) * 1e6 / total
    return Figures(total, workers, concurrency, round(seconds, 3), round(total / seconds, 1),
                   round(redis_us, 1), round(dispatcher_us, 1), round(workers_us, 1),
                   round((calls(client) - c0 - 2) / total, 2),
                   round(1e6 / max(redis_us, dispatcher_us, 1e-9), 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--flows", type=int, default=10, help="the tasks in this many flows")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pool", default="process")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    namespace = f"limit-{uuid.uuid4().hex[:8]}"
    os.environ["BALANCER_NAMESPACE"] = namespace
    logdir = Path(tempfile.mkdtemp(prefix="partition-limit-"))
    server = PrivateRedis(logdir).start()
    cluster = Cluster(server.url, namespace, logdir, "WARNING")
    client = redis.Redis.from_url(server.url, socket_timeout=30)
    try:
        cluster.env["BALANCER_PARTITIONS"] = str(args.partitions)
        cluster.serve()
        # Workers serve the partitions a serve stored: wait for it.
        deadline = time.monotonic() + 30
        while (client.get(Keys(namespace).partitions) is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
        with running_workers_n(cluster, args.pool, args.concurrency, args.workers):
            figures = measure(client, cluster, args.tasks, args.flows, args.workers,
                              args.concurrency, args.timeout)
    finally:
        cluster.stop_all()
        server.stop()
    print(f"{args.partitions} partition(s), {os.cpu_count()} cores, {args.workers} workers x"
          f" {args.concurrency} ({args.pool} pool), {figures.tasks} no-op tasks:")
    for name, value in asdict(figures).items():
        print(f"  {name:<28} {value}")
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2))
    return 0


def running_workers_n(cluster: Cluster, pool: str, concurrency: int, n: int):  # type: ignore[no-untyped-def]
    """cluster_bench starts two workers; this starts ``n``."""
    import bench.cluster_bench as cb

    cb.WORKERS = n
    return running_workers(cluster, pool, concurrency)


if __name__ == "__main__":
    sys.exit(main())
