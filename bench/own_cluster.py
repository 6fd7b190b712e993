"""A private cluster of the code that the running python has installed, for benchmarks
that compare commits by being run with another venv's python: a redis-server of its own,
``balancer serve`` and process-pool workers started from that checkout's folder (its
bench/ holds the tasks they import), every process stopped at the end. The tasks record
themselves on database 1 of the same server (``record_url``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from balancer.common.keys import Keys
from balancer.common.settings import Settings

import balancer
from bench.redis_servers import RedisServer, wait_until

# The checkout whose code runs.
CHECKOUT = Path(balancer.__file__).resolve().parent.parent


@dataclass
class OwnCluster:
    server: RedisServer
    procs: list[subprocess.Popen[bytes]]  # serve, then the workers

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def record_url(self) -> str:
        return self.server.url.rsplit("/", 1)[0] + "/1"


@contextmanager
def own_cluster(*workers: Sequence[str]) -> Iterator[OwnCluster]:
    """Serve and one worker per item of ``workers`` (its ``worker start`` options beyond
    the process pool and the tasks' import), yielded once every worker has registered."""
    server = RedisServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env.update(BALANCER_REDIS_URL=server.url, PYTHONPATH=str(CHECKOUT),
               BENCH_RECORD_URL=server.url.rsplit("/", 1)[0] + "/1")
    cluster = OwnCluster(server, [])
    try:
        cluster.procs.append(subprocess.Popen(
            [sys.executable, "-m", "balancer.cli", "serve"], cwd=CHECKOUT, env=env,
            stderr=subprocess.DEVNULL))
        for options in workers:
            cluster.procs.append(subprocess.Popen(
                [sys.executable, "-m", "balancer.worker.cli", "start", "--pool", "process",
                 "--import", "bench.compare.ours_tasks", *options],
                cwd=CHECKOUT, env=env, stderr=subprocess.DEVNULL))
        with redis.Redis.from_url(server.url) as client:
            registered = Keys(Settings().namespace).workers
            wait_until(lambda: client.zcard(registered) >= len(workers),
                       f"{len(workers)} workers to register")
        yield cluster
    finally:
        stop(cluster.procs)
        server.cleanup()


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then wait for each (killing one that does not stop)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def add_run_options(parser: argparse.ArgumentParser, runs: int = 2) -> None:
    """``--runs`` and ``--json``, which ``report_runs`` reads."""
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--json", type=Path, help="write every run's figures here")


def report_runs(args: argparse.Namespace, one_run: Callable[[argparse.Namespace], dict[str, Any]],
                line: Callable[[int, dict[str, Any]], str]) -> int:
    """Make ``args.runs`` runs, print each one's ``line``, and write every run's figures to
    ``args.json`` if given."""
    rows = []
    for n in range(1, args.runs + 1):
        rows.append(one_run(args))
        print(line(n, rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "runs": rows}, indent=2))
    return 0
