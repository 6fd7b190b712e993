"""Benchmark a real cluster: `balancer serve` plus two `worker start` processes on local Redis.

Measures, for `--pool process` and then `--pool thread` workers (restarted in between):

- throughput: one flow of N independent no-op tasks, submit time and end-to-end tasks/s;
- latency: M single-task flows one after another on idle workers, submit-to-done p50/p99/max;
- Redis commands per task: the INFO commandstats call total around the throughput run, / N.

It prints figures and never asserts speed. Run from anywhere:

    python bench/cluster_bench.py [--quick] [--tasks N] [--singles M] [--json PATH]

Durability's cost: ``--replica`` runs on a private master with one replica (redis-server
processes of its own, stopped at the end), and ``--min-replicas 1`` makes every submit and
acknowledgement wait for that replica (BALANCER_MIN_REPLICAS); compare a run with it and
one without, both with ``--replica``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.tasks, so must we

import redis  # noqa: E402
from balancer.common.keys import Keys  # noqa: E402
from balancer.common.models import FlowState  # noqa: E402
from balancer.common.urls import redact  # noqa: E402

from balancer import Flow  # noqa: E402
from bench.compare.base import PrivateRedis  # noqa: E402
from bench.tasks import noop  # noqa: E402

WORKERS = 2
QUEUE = "bench"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
IDLE_SAMPLE_S = 2.0
CLIENT_SOCKET_TIMEOUT = 30.0


@dataclass
class PoolFigures:
    pool: str
    tasks: int
    submit_s: float
    end_to_end_s: float
    tasks_per_s: float
    singles: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    redis_calls: int
    redis_cmds_per_task: float
    idle_cmds_per_s: float
    dispatcher_cpu_ms_per_task: float  # its user+system CPU over the throughput run, / N


# -- processes -------------------------------------------------------------------------


class Cluster:
    """The processes this benchmark starts; ``stop_all`` ends every one of them."""

    def __init__(self, url: str, namespace: str, logdir: Path, log_level: str) -> None:
        self.logdir = logdir
        self.log_level = log_level
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
        self.env.update(BALANCER_REDIS_URL=url, BALANCER_NAMESPACE=namespace,
                        PYTHONPATH=str(ROOT))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self.dispatcher: subprocess.Popen[bytes] | None = None

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        path = self.logdir / f"{name}-{len(self.procs)}.log"
        with path.open("wb") as log:
            # A session of its own: the pool children can be killed with their supervisor.
            proc = subprocess.Popen([sys.executable, "-m", *args, "--log-level", self.log_level],
                                    cwd=ROOT, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        self.logs[proc.pid] = path
        return proc

    def serve(self) -> subprocess.Popen[bytes]:
        self.dispatcher = self.start("serve", "balancer.cli", "serve")
        return self.dispatcher

    def workers(self, pool: str, concurrency: int, count: int = WORKERS
                ) -> list[subprocess.Popen[bytes]]:
        return [self.start(f"worker-{pool}", "balancer.worker.cli", "start", "--queue", QUEUE,
                           "--concurrency", str(concurrency), "--pool", pool)
                for _ in range(count)]

    def stop(self, proc: subprocess.Popen[bytes]) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group (pool children included)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"warning: pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT}s; killing",
                      file=sys.stderr)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: only what we started
        proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.procs):  # workers first, the dispatcher last
            code = self.stop(proc)
            if code not in (0, None):
                print(f"warning: pid {proc.pid} exited with {code}; log: {self.logs[proc.pid]}",
                      file=sys.stderr)

    def tail(self, proc: subprocess.Popen[bytes], lines: int = 20) -> str:
        text = self.logs[proc.pid].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def status(cluster: Cluster) -> dict[str, Any]:
    """`balancer status --json`, as an operator would run it."""
    out = subprocess.run([sys.executable, "-m", "balancer.cli", "status", "--json",
                          "--flows", "1"], cwd=ROOT, env=cluster.env, capture_output=True,
                         timeout=30, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def wait_ready(cluster: Cluster, workers: list[subprocess.Popen[bytes]],
               concurrency: int) -> None:
    """Until a dispatcher leads and every worker we started heartbeats with its slots."""
    pids = {p.pid for p in workers}
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        for proc in [*workers, cluster.dispatcher]:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"pid {proc.pid} exited with {proc.returncode}:\n"
                                   + cluster.tail(proc))
        view = status(cluster)
        ready = {w["pid"] for w in view["workers"]
                 if w["alive"] and w["capacity"] == concurrency and QUEUE in w["queues"]}
        if view["leader"] and pids <= ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers {sorted(pids)} not ready after {READY_TIMEOUT}s:"
                               f" {json.dumps(view)}")
        time.sleep(0.3)


@contextmanager
def running_workers(cluster: Cluster, pool: str, concurrency: int) -> Iterator[None]:
    workers = cluster.workers(pool, concurrency)
    try:
        wait_ready(cluster, workers, concurrency)
        yield
    finally:
        for proc in workers:
            cluster.stop(proc)


# -- measuring -------------------------------------------------------------------------


def command_calls(client: redis.Redis) -> int:
    """Every command the server has run, those called from Lua scripts included."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))


def idle_rate(client: redis.Redis, seconds: float = IDLE_SAMPLE_S) -> float:
    """Commands per second the server runs with our cluster idle (heartbeats, others)."""
    before = command_calls(client)
    time.sleep(seconds)
    return (command_calls(client) - before - 1) / seconds


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU a process has used (Linux /proc; 0 elsewhere): the
    dispatcher's cost per task is a figure of its own, apart from the workers'."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def many_noops(name: str, n: int) -> Flow:
    with Flow(name) as flow:
        for i in range(n):
            noop(i)
    return flow


def check(state: str, what: str) -> None:
    if state != FlowState.COMPLETED:
        raise RuntimeError(f"{what} ended {state}, not completed: see the worker logs")


def throughput(client: redis.Redis, n: int, timeout: float) -> tuple[float, float, int]:
    """(submit seconds, end-to-end seconds, Redis command calls) for one flow of n tasks."""
    flow = many_noops("bench-throughput", n)
    calls_before = command_calls(client)
    start = time.perf_counter()
    run = flow.submit(client=client)
    submitted = time.perf_counter()
    check(run.wait(timeout), f"throughput flow {run.id}")
    done = time.perf_counter()
    calls = command_calls(client) - calls_before - 1  # not our own second INFO
    return submitted - start, done - start, calls


def latencies(client: redis.Redis, m: int, timeout: float) -> list[float]:
    """Submit-to-done milliseconds of m single-task flows, one after another."""
    out = []
    for i in range(m):
        flow = many_noops(f"bench-single-{i}", 1)
        start = time.perf_counter()
        run = flow.submit(client=client)
        check(run.wait(timeout), f"single flow {run.id}")
        out.append((time.perf_counter() - start) * 1000)
    return out


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure_pool(client: redis.Redis, pool: str, n: int, m: int, warmup: int,
                 timeout: float, dispatcher_pid: int | None = None) -> PoolFigures:
    check(many_noops("bench-warmup", warmup).submit(client=client).wait(timeout), "warm-up")
    idle = idle_rate(client)
    cpu_before = cpu_seconds(dispatcher_pid)
    submit_s, total_s, calls = throughput(client, n, timeout)
    cpu = cpu_seconds(dispatcher_pid) - cpu_before
    lat = latencies(client, m, timeout)
    return PoolFigures(
        pool=pool, tasks=n, submit_s=round(submit_s, 4), end_to_end_s=round(total_s, 4),
        tasks_per_s=round(n / total_s, 1), singles=m,
        latency_p50_ms=round(percentile(lat, 50), 2),
        latency_p99_ms=round(percentile(lat, 99), 2), latency_max_ms=round(max(lat), 2),
        redis_calls=calls, redis_cmds_per_task=round(calls / n, 2),
        idle_cmds_per_s=round(idle, 1), dispatcher_cpu_ms_per_task=round(cpu * 1000 / n, 3))


# -- reporting -------------------------------------------------------------------------


def table(rows: list[PoolFigures]) -> str:
    head = (f"{'pool':<8} {'tasks':>6} {'submit s':>9} {'e2e s':>8} {'tasks/s':>9}"
            f" {'singles':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'cmds/task':>9}"
            f" {'idle cmd/s':>10} {'disp cpu ms/task':>16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.pool:<8} {r.tasks:>6} {r.submit_s:>9.3f} {r.end_to_end_s:>8.3f}"
                     f" {r.tasks_per_s:>9.1f} {r.singles:>7} {r.latency_p50_ms:>8.2f}"
                     f" {r.latency_p99_ms:>8.2f} {r.latency_max_ms:>8.2f}"
                     f" {r.redis_cmds_per_task:>9.2f} {r.idle_cmds_per_s:>10.1f}"
                     f" {r.dispatcher_cpu_ms_per_task:>16.3f}")
    return "\n".join(lines)


NOTE = ("cmds/task = INFO commandstats calls (Lua-invoked commands included) during the"
        " throughput run / tasks. It counts the whole server, so other clients of this Redis"
        " and idle traffic (heartbeats, blocking-pop timeouts; see idle cmd/s) are included.")


def drop_namespace(client: redis.Redis, namespace: str) -> int:
    keys = list(client.scan_iter(match=Keys(namespace).prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])
    return len(keys)


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--tasks", type=int, default=2000, help="N, tasks of the throughput flow")
    parser.add_argument("--singles", type=int, default=200, help="M, single-task flows timed")
    parser.add_argument("--concurrency", type=int, default=4, help="slots per worker")
    parser.add_argument("--pools", default="process,thread", help="comma-separated pools")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=200, M=30")
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait per flow, s")
    parser.add_argument("--log-level", default="INFO", help="of the cluster processes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-offers", action="store_true",
                        help="the client takes no standing offers (as under the client ACL"
                        " user): every small submit goes through the dispatcher")
    parser.add_argument("--replica", action="store_true",
                        help="run on a private Redis master with one replica, started and"
                             " stopped by the benchmark (instead of --redis-url)")
    parser.add_argument("--min-replicas", type=int, default=0,
                        help="BALANCER_MIN_REPLICAS: submits and acknowledgements wait until"
                             " this many replicas hold them (Redis WAIT)")
    parser.add_argument("--signing", action="store_true",
                        help="clients sign every task and workers verify it"
                             " (BALANCER_SIGNING_KEYS set to a benchmark key)")
    parser.add_argument("--no-task-events", action="store_true",
                        help="BALANCER_TASK_EVENTS=off for the cluster and the client: no"
                             " per-task events in the events stream")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.singles = 200, 30
    if args.tasks < 1 or args.singles < 1 or args.concurrency < 1:
        parser.error("--tasks, --singles and --concurrency must be at least 1")
    if args.min_replicas < 0:
        parser.error("--min-replicas must not be negative")
    return args


def replicated(logdir: Path) -> tuple[PrivateRedis, PrivateRedis]:
    """A private master and its replica, synced."""
    master = PrivateRedis(logdir, "--repl-diskless-sync-delay", "0").start()
    replica = PrivateRedis(logdir, "--replicaof", "127.0.0.1", str(master.port))
    try:
        replica.start()
        client = redis.Redis(port=master.port)
        deadline = time.monotonic() + READY_TIMEOUT
        while client.info("replication").get("slave0", {}).get("state") != "online":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.1)
    except BaseException:
        replica.stop()
        master.stop()
        raise
    return master, replica


def bench(args: argparse.Namespace, namespace: str, logdir: Path) -> list[PoolFigures]:
    # Flow.submit(client=...) takes the namespace from the environment only.
    os.environ["BALANCER_NAMESPACE"] = namespace
    if args.min_replicas:
        os.environ["BALANCER_MIN_REPLICAS"] = str(args.min_replicas)
    # More than FlowRun.wait's 5 s blocking pop: redis-py 8 defaults socket_timeout to 5 s,
    # which makes run.wait() fail with "Timeout reading from socket" on flows over 5 s.
    client = redis.Redis.from_url(args.redis_url, socket_timeout=CLIENT_SOCKET_TIMEOUT)
    client.ping()
    if args.no_offers:
        from balancer import submit as submit_module
        submit_module._offers_refused.add(client)
    cluster = Cluster(args.redis_url, namespace, logdir, args.log_level)
    if args.min_replicas:
        cluster.env["BALANCER_MIN_REPLICAS"] = str(args.min_replicas)
    if args.signing:
        cluster.env["BALANCER_SIGNING_KEYS"] = os.environ["BALANCER_SIGNING_KEYS"] = (
            "benchmark-signing-key-" + uuid.uuid4().hex)
    if args.no_task_events:
        cluster.env["BALANCER_TASK_EVENTS"] = os.environ["BALANCER_TASK_EVENTS"] = "off"
    rows = []
    try:
        cluster.serve()
        for pool in args.pools.split(","):
            with running_workers(cluster, pool, args.concurrency):
                rows.append(measure_pool(client, pool, args.tasks, args.singles,
                                         warmup=WORKERS * args.concurrency * 2,
                                         timeout=args.timeout,
                                         dispatcher_pid=cluster.dispatcher.pid
                                         if cluster.dispatcher else None))
            print(f"[done] {table(rows[-1:]).splitlines()[-1]}", file=sys.stderr, flush=True)
    finally:
        cluster.stop_all()
        dropped = drop_namespace(client, namespace)
        print(f"stopped {len(cluster.procs)} processes; deleted {dropped} keys of {namespace}",
              file=sys.stderr)
        client.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    logdir = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    servers: tuple[PrivateRedis, ...] = ()
    if args.replica:
        servers = replicated(logdir)
        args.redis_url = servers[0].url
    try:
        return _main(args, namespace, logdir)
    finally:
        for server in reversed(servers):
            server.stop()


def _main(args: argparse.Namespace, namespace: str, logdir: Path) -> int:
    print(f"cluster bench: redis={redact(args.redis_url)} namespace={namespace}"
          f" workers={WORKERS} x concurrency {args.concurrency} tasks={args.tasks}"
          f" singles={args.singles} cores={os.cpu_count()}"
          f" signing={'on' if args.signing else 'off'}"
          f" offers={'off' if args.no_offers else 'on'}"
          f" task_events={'off' if args.no_task_events else 'on'}"
          f" replica={'private' if args.replica else 'as given'}"
          f" min_replicas={args.min_replicas} logs={logdir}", flush=True)
    rows = bench(args, namespace, logdir)
    print(table(rows))
    print(NOTE)
    if args.json:
        args.json.write_text(json.dumps({
            "redis_url": redact(args.redis_url), "namespace": namespace, "workers": WORKERS,
            "concurrency": args.concurrency, "log_level": args.log_level,
            "replica": args.replica, "min_replicas": args.min_replicas,
            "note": NOTE, "pools": {r.pool: asdict(r) for r in rows},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
