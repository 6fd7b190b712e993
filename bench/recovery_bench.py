"""Measure how fast the cluster recovers from kill -9, on a private redis-server.

Prints figures and never asserts them:

(a) worker death: a task runs on worker A; kill -9 A; time until the task runs on another
    worker, read two ways: its state in Redis is ``running`` on that worker (polled every
    few ms through ``common.keys.Keys``), and the task itself starts there (it records the
    wall-clock time it began). p50/p99 over many kills, with the default heartbeat settings
    (1 s interval, 3 s timeout) and with a faster setting (0.2 s, 1 s).
(b) standby take-over: two ``balancer serve``; kill -9 the one holding ``Keys.leader`` at a
    random moment of its lease; time until a new leader token appears, and until a task
    submitted just after the kill has completed. Several repetitions, with the default
    leader lease (5 s) and a short one (2 s); the lease time left at each kill is printed.
(c) duplicates per kill: a short chaos run (``bench.chaos.driver``, as the chaos test runs
    it), which reports how many tasks each killed worker had begun and how many of them ran
    again.

Run from anywhere; ``--quick`` for a smoke run of a minute or so:

    python bench/recovery_bench.py [--quick] [--kills N] [--takeovers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.chaos.tasks

import redis  # noqa: E402
from balancer.common.keys import Keys  # noqa: E402

from balancer import Flow  # noqa: E402
from bench.chaos import tasks as chaos_tasks  # noqa: E402
from bench.chaos.driver import ChaosConfig, ChaosDriver  # noqa: E402
from bench.chaos.tasks import WORKER_ENV  # noqa: E402
from bench.compare.base import PrivateRedis  # noqa: E402

READY_TIMEOUT = 60.0
POLL = 0.005

DEFAULT_HEARTBEAT = {"BALANCER_HEARTBEAT_INTERVAL": "1.0", "BALANCER_WORKER_TIMEOUT": "3.0"}
FAST_HEARTBEAT = {"BALANCER_HEARTBEAT_INTERVAL": "0.2", "BALANCER_WORKER_TIMEOUT": "1.0"}


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = READY_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"n": len(values), "min": min(values), "p50": statistics.median(values),
            "p99": percentile(values, 99), "max": max(values)}


def fmt(values: list[float]) -> str:
    s = summary(values)
    if not s:
        return "no samples"
    return (f"p50 {s['p50']:.2f}s  p99 {s['p99']:.2f}s  (min {s['min']:.2f}s,"
            f" max {s['max']:.2f}s, n={s['n']})")


# -- processes -------------------------------------------------------------------------


class Cluster:
    """The processes of one measurement, in a namespace of their own; ``close`` kills
    every one of them. Serves as the chaos driver's ``Starter``."""

    def __init__(self, server: PrivateRedis, logdir: Path, settings: dict[str, str]) -> None:
        self.url = server.url
        self.namespace = f"recovery-{uuid.uuid4().hex[:10]}"
        self.keys = Keys(self.namespace)
        self.client = redis.Redis.from_url(self.url)
        self.logdir = logdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
        self.env.update(BALANCER_REDIS_URL=self.url, BALANCER_NAMESPACE=self.namespace,
                        PYTHONPATH=str(ROOT), **settings)
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        path = self.logdir / f"{self.namespace}-{name}-{len(self.procs)}.log"
        with path.open("wb") as log:
            # A session of its own: a kill takes the pool children along (killpg).
            proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT,
                                    env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        proc.log_path = str(path)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def serve(self) -> subprocess.Popen[bytes]:
        return self._start("serve", "balancer.cli", "serve")

    def worker(self, name: str, pool: str = "thread", concurrency: int = 1
               ) -> subprocess.Popen[bytes]:
        return self._start(name, "balancer.worker.cli", "start", "--name", name, "--pool", pool,
                           "--concurrency", str(concurrency),
                           env={**self.env, WORKER_ENV: name})

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: only what we started
        proc.wait(10)

    @staticmethod
    def log(proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def registered(self, name: str) -> bool:
        return self.client.zscore(self.keys.workers, name) is not None

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
        keys = list(self.client.scan_iter(match=self.keys.prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i:i + 500])
        self.client.close()


# -- (a) worker death ------------------------------------------------------------------


def worker_death(server: PrivateRedis, logdir: Path, settings: dict[str, str], kills: int,
                 label: str, rng: random.Random) -> dict[str, Any]:
    """kill -9 the worker running a task, ``kills`` times, each at a random moment of its
    heartbeat cycle; seconds until the task runs elsewhere."""
    interval = float(settings["BALANCER_HEARTBEAT_INTERVAL"])
    cluster = Cluster(server, logdir, settings)
    to_state: list[float] = []
    to_start: list[float] = []
    try:
        cluster.serve()
        live = {name: cluster.worker(name) for name in ("w0", "w1")}
        serial = 2
        for name in live:
            wait_until(f"worker {name}", partial(cluster.registered, name))
        for i in range(kills):
            release = cluster.keys.prefix + f"bench:release:{i}"
            started = cluster.keys.prefix + f"bench:started:{i}"
            with Flow(f"kill-{i}") as flow:
                held = chaos_tasks.hold(cluster.url, release, 120.0, started)
            run = flow.submit(cluster.client, namespace=cluster.namespace)
            first = wait_until("the task to start", partial(cluster.client.lindex, started, 0))
            victim = first.decode().split("|")[0]
            task_key = cluster.keys.task(run.ids[held])
            time.sleep(rng.uniform(0.0, interval))
            killed_at, t0 = time.time(), time.perf_counter()
            Cluster.kill(live.pop(victim))
            # The replacement starts now, as a supervisor would restart it; whichever
            # worker takes the task over counts as "elsewhere".
            name = f"w{serial}"
            serial += 1
            live[name] = cluster.worker(name)
            state_at = start_at = None
            while state_at is None or start_at is None:
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError(f"{label}: the task of killed {victim} did not move")
                state, worker = cluster.client.hmget(task_key, ["state", "worker"])
                if state_at is None and state == b"running" and worker not in (
                        None, victim.encode()):
                    state_at = time.perf_counter() - t0
                if start_at is None:
                    for entry in cluster.client.lrange(started, 1, -1):
                        who, when = entry.decode().split("|")
                        if who != victim:
                            start_at = float(when) - killed_at
                time.sleep(POLL)
            to_state.append(state_at)
            to_start.append(start_at)
            print(f"  {label} kill {i + 1:2d}/{kills}: {victim} killed; running elsewhere"
                  f" after {state_at:.3f}s (task began after {start_at:.3f}s)", flush=True)
            cluster.client.set(release, 1)
            if run.wait(timeout=60) != "completed":
                raise RuntimeError(f"{label}: flow {run.id} did not complete")
            wait_until("the fleet back at two workers", lambda: all(
                cluster.registered(n) for n in live) and cluster.client.zcard(
                    cluster.keys.workers) == 2)
    finally:
        cluster.close()
    return {"settings": settings, "to_running_state_s": summary(to_state),
            "to_task_start_s": summary(to_start), "samples_state": to_state,
            "samples_start": to_start}


# -- (b) standby take-over -------------------------------------------------------------


def leader_pid(token: bytes) -> int:
    """The pid in a leader token "epoch|host-pid-random"."""
    dispatcher_id = token.decode().split("|", 1)[1]
    return int(dispatcher_id.rsplit("-", 2)[1])


def new_token(cluster: Cluster, old: bytes) -> Any:
    token = cluster.client.get(cluster.keys.leader)
    return token if token is not None and token != old else None


def dispatcher_up(proc: subprocess.Popen[bytes]) -> bool:
    return "starting on namespace" in Cluster.log(proc)


def takeover(server: PrivateRedis, logdir: Path, leader_ttl: float, repetitions: int,
             label: str, rng: random.Random) -> dict[str, Any]:
    """kill -9 the leader at a random moment of its lease; seconds until a standby leads,
    and until a task submitted right after the kill has completed."""
    settings = {**FAST_HEARTBEAT, "BALANCER_LEADER_TTL": str(leader_ttl)}
    cluster = Cluster(server, logdir, settings)
    to_leader: list[float] = []
    to_task: list[float] = []
    lease_left: list[float] = []
    try:
        dispatchers = [cluster.serve(), cluster.serve()]
        cluster.worker("w0", "thread", 2)
        wait_until("worker w0", lambda: cluster.registered("w0"))
        for i in range(repetitions):
            for proc in dispatchers:
                wait_until("a standby dispatcher", partial(dispatcher_up, proc))
            # A leader has just renewed its lease after a take-over: kill at a random
            # moment of the renewal cycle instead, as a real crash would.
            time.sleep(rng.uniform(0.0, leader_ttl))
            token = wait_until("a leader", lambda: cluster.client.get(cluster.keys.leader))
            pid = leader_pid(token)
            leader = next(p for p in dispatchers if p.pid == pid)
            left = cluster.client.pttl(cluster.keys.leader) / 1000
            t0 = time.perf_counter()
            Cluster.kill(leader)
            lease_left.append(left)
            with Flow(f"takeover-{i}") as flow:
                chaos_tasks.name_of_worker()
            run = flow.submit(cluster.client, namespace=cluster.namespace)
            new = wait_until("a new leader", partial(new_token, cluster, token), timeout=60)
            to_leader.append(time.perf_counter() - t0)
            if run.wait(timeout=60) != "completed":
                raise RuntimeError(f"{label}: flow {run.id} did not complete")
            to_task.append(time.perf_counter() - t0)
            print(f"  {label} take-over {i + 1}/{repetitions}: lease left {left:.2f}s;"
                  f" epoch {token.decode().split('|')[0]} -> {new.decode().split('|')[0]}"
                  f" after {to_leader[-1]:.2f}s; task submitted at the kill done after"
                  f" {to_task[-1]:.2f}s", flush=True)
            dispatchers = [p for p in dispatchers if p is not leader] + [cluster.serve()]
    finally:
        cluster.close()
    return {"leader_ttl_s": leader_ttl, "to_new_leader_s": summary(to_leader),
            "to_task_done_s": summary(to_task), "lease_left_at_kill_s": summary(lease_left),
            "samples_leader": to_leader, "samples_task": to_task, "samples_left": lease_left}


# -- (c) duplicates per kill -----------------------------------------------------------


def chaos(server: PrivateRedis, logdir: Path, config: ChaosConfig) -> dict[str, Any]:
    settings = {"BALANCER_HEARTBEAT_INTERVAL": "0.2", "BALANCER_WORKER_TIMEOUT": "2.0",
                "BALANCER_DISPATCH_TICK": "0.1", "BALANCER_LEADER_TTL": "2.0",
                "BALANCER_POISON_THRESHOLD": "20"}
    cluster = Cluster(server, logdir, settings)
    driver = ChaosDriver(cluster.client, cluster.namespace, cluster.url, cluster, config,
                         say=lambda line: print("  " + line, flush=True))
    try:
        driver.start()
        report = driver.run()
    finally:
        driver.stop()
        cluster.close()
    for line in report.lines():
        print("  " + line)
    return report.figures()


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--kills", type=int, help="worker kills per setting (default 20)")
    parser.add_argument("--takeovers", type=int, help="take-overs per lease (default 5)")
    parser.add_argument("--seed", type=int, default=20240917,
                        help="seed of the chaos run and of the kill moments")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs")
    args = parser.parse_args()
    kills = args.kills or (3 if args.quick else 20)
    takeovers = args.takeovers or (2 if args.quick else 5)
    config = (ChaosConfig(seed=args.seed, flows=2, layers=5, width=15, worker_kills=3,
                          dispatcher_kills=1, both_kills=0, deadline=90.0) if args.quick else
              ChaosConfig(seed=args.seed))  # the chaos test's CI run

    workdir = Path(tempfile.mkdtemp(prefix="recovery-bench-"))
    if shutil.which("redis-server") is None:
        raise SystemExit("recovery_bench needs redis-server on PATH")
    server = PrivateRedis(workdir).start()
    figures: dict[str, Any] = {"quick": args.quick, "redis": server.url}
    started = time.perf_counter()
    try:
        print(f"recovery bench on a private redis-server at {server.url}"
              f" ({'quick' if args.quick else 'full'}; logs in {workdir})", flush=True)
        print("(a) kill -9 a worker running a task: time until the task runs elsewhere")
        rng = random.Random(args.seed)
        death = {}
        for label, settings in (("default 1.0s/3.0s", DEFAULT_HEARTBEAT),
                                ("fast 0.2s/1.0s", FAST_HEARTBEAT)):
            death[label] = worker_death(server, workdir, settings, kills, label, rng)
        print("(b) kill -9 the leading dispatcher with a standby running")
        leases = {}
        for ttl in (5.0, 2.0):
            leases[f"leader_ttl {ttl}s"] = takeover(server, workdir, ttl, takeovers,
                                                    f"leader_ttl {ttl}s", rng)
        print(f"(c) chaos: {config.tasks} tasks, seed {config.seed}")
        figures["chaos"] = chaos(server, workdir, config)
        figures["worker_death"] = death
        figures["takeover"] = leases

        print("\n== recovery figures ==")
        for label, d in death.items():
            print(f"worker kill -> running elsewhere, heartbeat {label}:")
            print(f"    state running on another worker: {fmt(d['samples_state'])}")
            print(f"    task began on another worker:     {fmt(d['samples_start'])}")
        for label, t in leases.items():
            print(f"standby take-over, {label}:")
            print(f"    lease left at the kill:      {fmt(t['samples_left'])}")
            print(f"    new leader token:            {fmt(t['samples_leader'])}")
            print(f"    task submitted at kill done: {fmt(t['samples_task'])}")
        c = figures["chaos"]
        print(f"chaos (seed {c['seed']}): {c['tasks']} tasks, {c['executions']} executions,"
              f" {c['duplicates']} duplicates over {c['worker_kills']} worker kills"
              f" ({c['duplicates_per_worker_kill']} per kill; per kill {c['duplicates_per_kill']});"
              f" {c['taken_on_killed_workers']} tasks taken by killed workers;"
              f" {c['dispatcher_kills']} dispatcher kills; problems {c['problems']}")
        print(f"total {time.perf_counter() - started:.0f}s")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        server.stop()
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
