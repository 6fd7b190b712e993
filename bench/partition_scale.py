"""Partitions at scale: many simulated workers over P partitions, led by one or several
`balancer serve --partitions P` processes, under a stream of tasks.

On a private Redis, this starts the serves, then ``bench/compare/simworkers.py`` (simulated
one-slot workers that register, beat and take in every partition, as real workers do
through their doorbell), measures the idle cost of the workers' heartbeats and sweeps, then
runs submitter processes offering ``--rate`` tasks/s (flows of ``--flow-size`` tasks of one
queue, placed over the partitions by their ids) for ``--seconds``, and prints, over the
measured window (after ``--warmup`` seconds):

- tasks/s offered (submitted) and achieved (acknowledged by the simulated workers);
- assignment latency: a task's ready time (its submit) to the moment a simulated worker
  took its lease from its inbox, p50 and p99;
- the CPU share (of one core) and CPU per task of Redis's main thread, each serve, the
  simulators and the submitters, and Redis commands per task by command;
- the ceiling each figure implies: one core / its CPU per task (Redis per master,
  dispatchers per serve), what bigger hosts would reach.

A single Redis, not a Cluster: the simulator blocks on many workers' doorbells in one
BLMPOP, which a Cluster refuses across slots (a real worker blocks on its own doorbell
only). On one Redis every partition's commands reach the same main thread, so its CPU per
task is that of all partitions together; on a Cluster it divides over the masters.

    python bench/partition_scale.py [--workers 10000] [--partitions 16] [--serves 2]
        [--rate 50000] [--seconds 30] [--sims 1] [--submitters 1] [--sweep llen|take]
        [--json PATH]

``--real-workers N [--python PATH]`` measures instead what N real idle workers (one slot,
thread pool) cost Redis per second over P partitions: their heartbeats and sweeps, with
the code of the checkout PATH's interpreter runs (a before/after of worker changes).
``--round-trips`` measures Redis's CPU per light beat (a ZADD), one per round trip or 16
pipelined (redis-benchmark as the client).

It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from balancer.common.keys import Keys  # noqa: E402

from balancer import Flow  # noqa: E402
from bench.cluster_bench import Cluster, cpu_seconds  # noqa: E402
from bench.compare import ours_tasks  # noqa: E402
from bench.compare.base import PrivateRedis, command_breakdown, commands_since, top  # noqa: E402
from bench.partition_limit import redis_cpu  # noqa: E402


def submit_stream(rate: float, seconds: float, flow_size: int) -> None:
    """A submitter process: flows of ``flow_size`` sim tasks at ``rate`` tasks/s for
    ``seconds`` (as fast as it can when it falls behind); prints what it submitted."""
    client = redis.Redis.from_url(os.environ["BALANCER_REDIS_URL"], socket_timeout=60)
    every = flow_size / rate
    start = time.perf_counter()
    cpu0 = time.process_time()
    submitted = k = 0
    while time.perf_counter() - start < seconds:
        wait = k * every - (time.perf_counter() - start)
        if wait > 0:
            time.sleep(wait)
        with Flow("sim") as flow:
            for i in range(flow_size):
                ours_tasks.simulated(i)
        flow.submit(client, namespace=os.environ["BALANCER_NAMESPACE"])
        submitted += flow_size
        k += 1
    print(json.dumps({"submitted": submitted, "seconds": time.perf_counter() - start,
                      "cpu_s": time.process_time() - cpu0}), flush=True)


def wait_for(what: str, done: Any, timeout: float, procs: list[subprocess.Popen[bytes]]
             ) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: pid {p.pid} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.2)


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def snapshot(client: redis.Redis, serves: list[int], sims: list[int], subs: list[int]
             ) -> dict[str, Any]:
    return {"t": time.perf_counter(), "redis": redis_cpu(client),
            "serves": [cpu_seconds(p) for p in serves], "sims": tree_cpu(sims),
            "subs": tree_cpu(subs), "cmds": command_breakdown(client)}


def deltas(client: redis.Redis, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"seconds": b["t"] - a["t"], "redis": b["redis"] - a["redis"],
            "serves": [y - x for x, y in zip(a["serves"], b["serves"])],
            "sims": b["sims"] - a["sims"], "subs": b["subs"] - a["subs"],
            "cmds": commands_since(client, a["cmds"])}


def leaders(client: redis.Redis, parts: list[Keys], pids: list[int]) -> dict[int, str]:
    """Which partitions each serve leads now (a leader key holds ``epoch|<host>-<pid>-..``)."""
    led: dict[int, list[str]] = {pid: [] for pid in pids}
    for k in parts:
        raw = client.get(k.leader)
        holder = raw.decode().split("|", 1)[-1] if isinstance(raw, bytes) else ""
        for pid in pids:
            if f"-{pid}-" in holder:
                led[pid].append(str(k.partition))
    return {pid: ",".join(ps) or "none" for pid, ps in led.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    namespace = f"scale-{uuid.uuid4().hex[:8]}"
    logdir = args.logdir = Path(tempfile.mkdtemp(prefix="partition-scale-"))
    server = PrivateRedis(logdir, "--maxclients", "10000").start()
    cluster = Cluster(server.url, namespace, logdir, args.log_level)
    cluster.env.update(BALANCER_PARTITIONS=str(args.partitions),
                       BALANCER_WORKER_TIMEOUT=str(args.worker_timeout))
    client = redis.Redis.from_url(server.url, socket_timeout=60)
    keys = Keys(namespace)
    parts = [keys.of(p) for p in range(args.partitions)]
    sims: list[subprocess.Popen[bytes]] = []
    subs: list[subprocess.Popen[bytes]] = []
    try:
        serves = [cluster.serve() for _ in range(args.serves)]
        wait_for("every partition led", lambda: all(client.get(k.leader) for k in parts),
                 60, serves)
        per_sim = args.workers // args.sims
        for s in range(args.sims):
            log = (logdir / f"sim-{s}.log").open("wb")
            sims.append(subprocess.Popen(
                [sys.executable, "-m", "bench.compare.simworkers", "--workers", str(per_sim),
                 "--queue", ours_tasks.SIM, "--seconds", str(args.seconds + 600),
                 "--consumers", str(args.consumers), "--beats", "real",
                 "--sweep", args.sweep, "--prefix", f"{s}"],
                cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True))
        total = per_sim * args.sims
        wait_for("the simulated workers registered",
                 lambda: all(client.zcard(k.workers) >= total for k in parts), 300,
                 sims + serves)
        time.sleep(3)  # the dispatchers take in the registrations
        serve_pids, sim_pids = [p.pid for p in serves], [p.pid for p in sims]
        a = snapshot(client, serve_pids, sim_pids, [])
        time.sleep(args.idle_seconds)
        idle = deltas(client, a, snapshot(client, serve_pids, sim_pids, []))

        for i in range(args.submitters):
            subs.append(subprocess.Popen(
                [sys.executable, str(Path(__file__)), "--submitter", "--rate",
                 str(args.rate / args.submitters), "--seconds", str(args.seconds),
                 "--flow-size", str(args.flow_size)],
                cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
                stderr=(logdir / f"submit-{i}.log").open("wb"), start_new_session=True))
        sub_pids = [p.pid for p in subs]
        time.sleep(args.warmup)
        for p in sims:
            p.send_signal(signal.SIGUSR1)
        a = snapshot(client, serve_pids, sim_pids, sub_pids)
        time.sleep(max(1.0, args.seconds - args.warmup - 1))
        for p in sims:
            p.send_signal(signal.SIGTERM)
        window = deltas(client, a, snapshot(client, serve_pids, sim_pids, sub_pids))
        backlog = sum(int(client.zcard(k.queue(ours_tasks.SIM))) for k in parts)
        sim_reports = [json.loads((p.communicate(timeout=60)[0] or b"{}").splitlines()[-1])
                       for p in sims]
        sub_reports = [json.loads((p.communicate(timeout=120)[0] or b"{}").splitlines()[-1])
                       for p in subs]
        led = leaders(client, parts, serve_pids)
        return figures(args, idle, window, sim_reports, sub_reports, backlog, serve_pids, led)
    finally:
        for p in sims + subs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        cluster.stop_all()
        server.stop()


def idle_real(args: argparse.Namespace) -> dict[str, Any]:
    """``--real-workers N``: N real one-slot workers (thread pools) and one serve, run by
    ``--python`` (another checkout's interpreter, for a before/after), idle: what their
    heartbeats and sweeps cost Redis per second."""
    namespace = f"scale-{uuid.uuid4().hex[:8]}"
    logdir = Path(tempfile.mkdtemp(prefix="partition-scale-"))
    server = PrivateRedis(logdir).start()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BALANCER_") and k != "PYTHONPATH"}
    env.update(BALANCER_REDIS_URL=server.url, BALANCER_NAMESPACE=namespace,
               BALANCER_PARTITIONS=str(args.partitions))
    client = redis.Redis.from_url(server.url, socket_timeout=60)
    parts = [Keys(namespace).of(p) for p in range(args.partitions)]
    procs: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        log = (logdir / f"proc-{len(procs)}.log").open("wb")
        proc = subprocess.Popen([args.python, "-m", *argv, "--log-level", "WARNING"],
                                cwd=logdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    try:
        start("balancer.cli", "serve")
        wait_for("every partition led", lambda: all(client.get(k.leader) for k in parts),
                 60, procs)
        for _ in range(args.real_workers):
            start("balancer.worker.cli", "start", "--queue", "idle", "--concurrency", "1",
                  "--pool", "thread")
        wait_for("the workers registered", lambda: all(
            client.zcard(k.workers) >= args.real_workers for k in parts), 120, procs)
        time.sleep(args.settle)  # host loads settle: fewer full beats
        pids = [p.pid for p in procs]
        a = snapshot(client, pids[:1], pids[1:], [])
        time.sleep(args.idle_seconds)
        d = deltas(client, a, snapshot(client, pids[:1], pids[1:], []))
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        server.stop()
    secs = d["seconds"]
    calls = sum(d["cmds"].values())
    return {"python": args.python, "workers": args.real_workers,
            "partitions": args.partitions, "seconds": round(secs, 2),
            "load_avg_1m": os.getloadavg()[0],
            "redis_cpu_share": round(d["redis"] / secs, 4),
            "redis_cpu_us_per_worker_s": round(d["redis"] * 1e6 / secs / args.real_workers, 1),
            "redis_cmds_per_worker_s": round(calls / secs / args.real_workers, 2),
            "by_command_per_worker_s": {k: round(v / args.real_workers, 2)
                                        for k, v in top(d["cmds"], secs).items()},
            "workers_cpu_share": round(d["sims"] / secs, 3),
            "serve_cpu_share": round(d["serves"][0] / secs, 3)}


def round_trips(n: int = 400_000) -> dict[str, Any]:
    """``--round-trips``: Redis's CPU per light beat (a ZADD of ``workers``) sent one per
    round trip, as a worker of P partitions did, and 16 to a round trip, as its beat of
    16 partitions is now pipelined; 50 connections, redis-benchmark as the client (C,
    so that the client's cost does not limit the rate)."""
    logdir = Path(tempfile.mkdtemp(prefix="partition-scale-"))
    server = PrivateRedis(logdir).start()
    client = redis.Redis.from_url(server.url, socket_timeout=60)
    out: dict[str, Any] = {"commands": n, "load_avg_1m": os.getloadavg()[0]}
    try:
        for pipeline in (1, 16, 1, 16):  # alternated, twice
            before = redis_cpu(client)
            subprocess.run(["redis-benchmark", "-p", str(server.port), "-c", "50", "-n",
                            str(n), "-P", str(pipeline), "-r", "10000", "-q", "ZADD",
                            "{bench}:workers", "__rand_int__", "w-__rand_int__"],
                           check=True, capture_output=True)
            us = (redis_cpu(client) - before) * 1e6 / n
            out.setdefault(f"redis_cpu_us_per_zadd_pipelined_{pipeline}", []).append(
                round(us, 2))
    finally:
        server.stop()
    return out


def figures(args: argparse.Namespace, idle: dict[str, Any], window: dict[str, Any],
            sims: list[dict[str, Any]], subs: list[dict[str, Any]], backlog: int,
            serve_pids: list[int], led: dict[int, str]) -> dict[str, Any]:
    secs = window["seconds"]
    done = sum(s.get("completed", 0) for s in sims)
    per_task = max(done, 1)
    submitted = sum(s.get("submitted", 0) for s in subs)
    sub_secs = max((s.get("seconds", 0.0) for s in subs), default=0.0) or secs
    cmds = sum(window["cmds"].values())
    idle_secs = idle["seconds"]
    serve_us = [c * 1e6 / per_task for c in window["serves"]]
    redis_us = window["redis"] * 1e6 / per_task
    return {
        "workers": args.workers, "partitions": args.partitions, "serves": args.serves,
        "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
        "sweep": args.sweep, "logs": str(args.logdir),
        "idle": {
            "seconds": round(idle_secs, 2),
            "redis_cpu_share": round(idle["redis"] / idle_secs, 3),
            "serve_cpu_shares": [round(c / idle_secs, 3) for c in idle["serves"]],
            "sim_cpu_share": round(idle["sims"] / idle_secs, 3),
            "redis_cmds_per_s": round(sum(idle["cmds"].values()) / idle_secs),
            "by_command_per_s": {k: round(v) for k, v in top(idle["cmds"], idle_secs).items()},
        },
        "offered_tasks_per_s": args.rate,
        "submitted_tasks_per_s": round(submitted / sub_secs, 1),
        "achieved_tasks_per_s": round(done / secs, 1),
        "window_s": round(secs, 2), "completed": done,
        "refused": sum(s.get("refused", 0) for s in sims),
        "backlog_at_end": backlog,
        "latency_ready_to_taken_ms": {
            "p50": max((s.get("latency_p50_ms") or 0 for s in sims), default=None),
            "p99": max((s.get("latency_p99_ms") or 0 for s in sims), default=None)},
        "cpu_share": {"redis": round(window["redis"] / secs, 3),
                      "serves": {f"{pid} (leads {led.get(pid, '?')})": round(c / secs, 3)
                                 for pid, c in zip(serve_pids, window["serves"])},
                      "sims": round(window["sims"] / secs, 3),
                      "submitters": round(window["subs"] / secs, 3)},
        "cpu_us_per_task": {"redis": round(redis_us, 1),
                            "serves": [round(u, 1) for u in serve_us],
                            "serves_total": round(sum(serve_us), 1),
                            "sims": round(window["sims"] * 1e6 / per_task, 1),
                            "submitters": round(window["subs"] * 1e6 / per_task, 1)},
        # Net of the idle phase's rate (the workers' heartbeats and sweeps): what each task
        # adds.
        "cpu_us_per_task_net_of_idle": {
            "redis": round((window["redis"] - idle["redis"] / idle_secs * secs) * 1e6
                           / per_task, 1),
            "serves_total": round((sum(window["serves"]) - sum(idle["serves"]) / idle_secs
                                   * secs) * 1e6 / per_task, 1)},
        "redis_cmds_per_task": round(cmds / per_task, 2),
        "by_command_per_task": {k: round(v, 2) for k, v in top(window["cmds"], per_task).items()},
        # One core / CPU per task: Redis's (all partitions on one main thread here; on a
        # Cluster of M masters, about M times this) and the dispatchers' (all serves).
        "ceiling_redis_one_core_tasks_per_s": round(1e6 / max(redis_us, 1e-9)),
        "ceiling_dispatch_per_core_tasks_per_s": round(1e6 / max(sum(serve_us), 1e-9)),
        "sim_errors": [s.get("error") for s in sims if s.get("error")],
        "sim_slowest_heartbeat_round_s": max((s.get("slowest_heartbeat_round_s", 0)
                                              for s in sims), default=None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=10000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--serves", type=int, default=2)
    parser.add_argument("--rate", type=float, default=50000.0, help="offered tasks/s")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--flow-size", type=int, default=200)
    parser.add_argument("--sims", type=int, default=1)
    parser.add_argument("--consumers", type=int, default=16, help="per simulator")
    parser.add_argument("--submitters", type=int, default=1)
    parser.add_argument("--sweep", choices=("take", "llen"), default="llen")
    parser.add_argument("--worker-timeout", type=float, default=10.0,
                        help="BALANCER_WORKER_TIMEOUT: a busy simulator's beats may lag")
    parser.add_argument("--real-workers", type=int, default=0,
                        help="instead: this many real idle workers, and their cost to Redis")
    parser.add_argument("--python", default=sys.executable,
                        help="with --real-workers: the interpreter of the checkout to run")
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--round-trips", action="store_true",
                        help="instead: Redis's CPU per light beat, alone or 16 pipelined")
    parser.add_argument("--log-level", default="WARNING", help="of the serves")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--submitter", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.submitter:
        submit_stream(args.rate, args.seconds, args.flow_size)
        return 0
    result = (round_trips() if args.round_trips else idle_real(args) if args.real_workers
              else run(args))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
