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
processes started from that checkout's folder), so another venv's python compares
another commit. It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import redis

import balancer
from balancer import Flow

# The checkout whose code runs: its bench/ holds the tasks the workers import.
CHECKOUT = Path(balancer.__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from balancer.common.keys import Keys  # noqa: E402
from balancer.common.settings import Settings  # noqa: E402

from bench.compare import ours_tasks  # noqa: E402
from bench.redis_servers import RedisServer, wait_until  # noqa: E402

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
    server = RedisServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env.update(BALANCER_REDIS_URL=server.url,
               BENCH_RECORD_URL=server.url.rsplit("/", 1)[0] + "/1",
               PYTHONPATH=str(CHECKOUT))
    procs: list[subprocess.Popen[bytes]] = []
    counter = _Offers()
    logger = logging.getLogger("balancer.client")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "balancer.cli", "serve"],
                                      cwd=CHECKOUT, env=env, stderr=subprocess.DEVNULL))
        for _ in range(args.workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "balancer.worker.cli", "start", "--concurrency", "1",
                 "--pool", "process", "--import", "bench.compare.ours_tasks", "--queue",
                 ours_tasks.QUEUE], cwd=CHECKOUT, env=env, stderr=subprocess.DEVNULL))
        client = redis.Redis.from_url(server.url, socket_timeout=30)
        record = redis.Redis.from_url(env["BENCH_RECORD_URL"])
        workers = Keys(Settings().namespace).workers
        wait_until(lambda: client.zcard(workers) >= args.workers,
                   f"{args.workers} workers to register")

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
        processes = {server.proc.pid: ("Redis", psutil.Process(server.proc.pid))}  # type: ignore[union-attr]
        processes[os.getpid()] = ("client", psutil.Process())
        processes[procs[0].pid] = ("serve", psutil.Process(procs[0].pid))
        for proc in procs[1:]:
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
        cpu = {kind: (after[kind] - before[kind]) / args.tasks * 1e6 for kind in KINDS}
        return {"calls_per_s": args.tasks / (submitted - t0),
                "tasks_per_s": args.tasks / (done - t0),
                "offers_taken": counter.taken / args.tasks,
                "cpu_us_per_task": cpu | {"all": sum(cpu.values())}}
    finally:
        logger.removeHandler(counter)
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
    parser.add_argument("--workers", type=int, default=1, help="workers of one slot each")
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--serial", action="store_true",
                        help="each submit waits for the last task's record")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    print(f"code: {CHECKOUT}; {args.workers} x 1, {args.tasks} single-task submits"
          f" {'one at a time' if args.serial else 'streamed'}")
    print(f"{'run':>4} {'calls/s':>8} {'tasks/s':>8} {'offers':>7}"
          + "".join(f" {k:>10}" for k in (*KINDS, "all")) + "   (CPU us per task)")
    rows = []
    for n in range(1, args.runs + 1):
        row = one_run(args)
        rows.append(row)
        cpu = row["cpu_us_per_task"]
        print(f"{n:>4} {row['calls_per_s']:>8,.0f} {row['tasks_per_s']:>8,.0f}"
              f" {row['offers_taken']:>7.0%}"
              + "".join(f" {cpu[k]:>10,.0f}" for k in (*KINDS, "all")))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
