"""What every process spends per task while one client submits single-task flows, one
call each: ``--workers`` workers of one process slot, ``balancer serve`` and a private
Redis; the no-op tasks record themselves on another database of it.

Two ways to submit: a stream (the default; each submit follows the last at once, so a
backlog may build), or ``--serial`` (each waits for the last task's record, as a client
running one task at a time; the worker may still be acking the last one).

Per run it prints the submit calls/s, the tasks/s end to end, the share of submits that
took a standing offer (leased to a worker by the submit itself, without the dispatcher),
and the CPU of each kind of process in us per task (psutil, over the measured tasks).

    python bench/stream_bench.py [--workers 1] [--tasks 10000] [--warm 300] [--serial]
                                 [--runs 2] [--json PATH]

It runs the code of the interpreter running it (``balancer`` as installed there, its
processes started from that checkout's folder: bench/own_cluster.py), so another venv's
python compares another commit. It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import redis

from balancer import Flow

# This file's bench/, after ``balancer`` is imported from the running python's venv (which
# may hold another checkout: bench/own_cluster.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import ours_tasks
from bench.own_cluster import CHECKOUT, add_run_options, own_cluster, report_runs
from bench.redis_servers import wait_until

KINDS = ("client", "serve", "supervisor", "pool child", "Redis")


class _Offers(logging.Handler):
    """Counts the submits that leased their task at once (the client's INFO line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.taken = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "leased it at once" in record.getMessage():
            self.taken += 1


def _cpu(processes: dict[int, tuple[str, psutil.Process]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for kind, proc in processes.values():
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[kind] += times.user + times.system
    return out


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    counter = _Offers()
    logger = logging.getLogger("balancer.client")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    one_slot = ("--concurrency", "1", "--queue", ours_tasks.QUEUE)
    try:
        with own_cluster(*[one_slot] * args.workers) as cluster:
            client = redis.Redis.from_url(cluster.url, socket_timeout=30)
            record = redis.Redis.from_url(cluster.record_url)

            def submit(n: int) -> None:
                with Flow("stream") as flow:
                    ours_tasks.noop("done", str(n), 0.0)
                flow.submit(client)
                if args.serial:
                    record.blpop(["done"], 30)

            for n in range(args.warm):
                submit(n)
            wait_until(lambda: args.serial or record.llen("done") >= args.warm, "the warm-up")
            record.delete("done")
            time.sleep(0.5)
            server, serve, *supervisors = (cluster.server.proc, *cluster.procs)
            assert server is not None
            processes = {server.pid: ("Redis", psutil.Process(server.pid)),
                         os.getpid(): ("client", psutil.Process()),
                         serve.pid: ("serve", psutil.Process(serve.pid))}
            for proc in supervisors:
                processes[proc.pid] = ("supervisor", psutil.Process(proc.pid))
                for child in psutil.Process(proc.pid).children(recursive=True):
                    processes[child.pid] = ("pool child", child)
            counter.taken = 0
            before, t0 = _cpu(processes), time.perf_counter()
            for n in range(args.tasks):
                submit(n)
            submitted = time.perf_counter()
            wait_until(lambda: args.serial or record.llen("done") >= args.tasks, "the tasks",
                       timeout=600)
            done, after = time.perf_counter(), _cpu(processes)
    finally:
        logger.removeHandler(counter)
    cpu = {kind: (after[kind] - before[kind]) / args.tasks * 1e6 for kind in KINDS}
    return {"calls_per_s": args.tasks / (submitted - t0),
            "tasks_per_s": args.tasks / (done - t0),
            "offers_taken": counter.taken / args.tasks,
            "cpu_us_per_task": cpu | {"all": sum(cpu.values())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="workers of one slot each")
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--serial", action="store_true",
                        help="each submit waits for the last task's record")
    add_run_options(parser)
    args = parser.parse_args(argv)
    print(f"code: {CHECKOUT}; {args.workers} x 1, {args.tasks} single-task submits"
          f" {'one at a time' if args.serial else 'streamed'}")
    print(f"{'run':>4} {'calls/s':>8} {'tasks/s':>8} {'offers':>7}"
          + "".join(f" {k:>10}" for k in (*KINDS, "all")) + "   (CPU us per task)")
    return report_runs(args, one_run, lambda n, row: (
        f"{n:>4} {row['calls_per_s']:>8,.0f} {row['tasks_per_s']:>8,.0f}"
        f" {row['offers_taken']:>7.0%}"
        + "".join(f" {row['cpu_us_per_task'][k]:>10,.0f}" for k in (*KINDS, "all"))))

if __name__ == "__main__":
    sys.exit(main())
