"""Partitions on a Redis Cluster: 3 masters, 3 partitions, 3 `balancer serve` processes.

Issue 16's scale run on one machine. It creates a local Redis Cluster of three masters and
three replicas (``bench.redis_servers.LocalCluster``), chooses a namespace whose partitions'
hash tags fall on different masters, starts ``--serves`` `balancer serve --partitions P`
processes and worker processes, and runs:

- throughput: ``--tasks`` no-op tasks in ``--flows`` flows, each flow placed in a partition
  by its id as any client places it; tasks/s, Redis commands and main-thread CPU per master
  (INFO commandstats and INFO cpu: the issue wants the commands balanced within 20%), the
  CPU per task of each serve process (and the partitions it led) and of the workers;
- makespan: bench/compare's workload 3 (2 workers x 2 slots, 10 x 2 s and 30 x 0.05 s
  sleeps shuffled with seed 4), each task a flow of its own so that they spread over the
  partitions; the makespan over the zero-overhead greedy and optimal schedules
  (bench/compare/schedule.py; the goal of issue 4 is 1.03 of greedy);
- priority: 2 workers x 1 slot; a backlog of low-priority sleeps (queue bench-low,
  priority 0) spread over the partitions, then high-priority ones (bench-high, priority 1)
  behind it. Within a partition priorities are exact: a low leased while a high of the
  same partition was ready is an inversion at dispatch (read from each partition's
  ``dispatch`` events, Redis's order). Across partitions they are approximate: it counts
  the lows, of the high's partition and of the others, that started while a high waited.

Times come from the tasks' own records (started, finished) and, for when a task was
queued, the moment its submit returned: all on this machine's clock, which the Redis
servers on it share. Everything it starts is stopped at the end.

    python bench/cluster_partitions_bench.py [--quick] [--tasks N] [--flows F]
        [--workers W] [--concurrency C] [--serves S] [--partitions P]
        [--makespan-rounds R] [--workloads throughput,makespan,priority] [--json PATH]

It prints figures and never asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.tasks, so must we

import redis  # noqa: E402
from balancer.common import events, partitions  # noqa: E402
from balancer.common.connection import connect  # noqa: E402
from balancer.common.keys import Keys  # noqa: E402

from balancer import Flow  # noqa: E402
from balancer.run import FlowRun  # noqa: E402
from bench.cluster_bench import Cluster, check, cpu_seconds, many_noops  # noqa: E402
from bench.compare import schedule  # noqa: E402
from bench.compare.workloads import Config, makespan_durations  # noqa: E402
from bench.partition_limit import redis_cpu, tree_cpu  # noqa: E402
from bench.redis_servers import LocalCluster, wait_until  # noqa: E402
from bench.tasks import nap, nap_high, nap_low  # noqa: E402

HIGH, LOW = "bench-high", "bench-low"
READY_TIMEOUT = 60.0
Figures = dict[str, Any]


def dispatcher_pid(dispatcher_id: str) -> int:
    return int(dispatcher_id.rsplit("-", 2)[1])  # "<host>-<pid>-<random>"


@dataclass
class Bench:
    """The local cluster, the namespace on it, the processes started on it."""

    local: LocalCluster
    namespace: str
    count: int
    logdir: Path
    procs: Cluster = field(init=False)
    client: redis.Redis = field(init=False)
    serves: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.procs = Cluster(self.local.url, self.namespace, self.logdir, "WARNING")
        self.procs.env["BALANCER_PARTITIONS"] = str(self.count)
        self.client = connect(self.local.url)

    def keys(self, partition: int) -> Keys:
        return Keys(self.namespace, partition)

    # -- processes ---------------------------------------------------------------------

    def start_serves(self, n: int) -> None:
        self.serves = [self.procs.start("serve", "balancer.cli", "serve") for _ in range(n)]
        share = partitions.share(self.count, n)

        def shared() -> bool:
            led = self.leaders()
            each = Counter(led.values())
            return (len(led) == self.count and max(each.values()) <= share
                    and len(each) == min(n, self.count))

        self._until(shared, "every partition led, each serve within its share")

    def start_workers(self, n: int, concurrency: int, queues: tuple[str, ...]) -> None:
        for proc in self.workers:
            self.procs.stop(proc)
        self.workers = []
        self._until(lambda: all(self.client.zcard(self.keys(p).workers) == 0
                                for p in range(self.count)), "the old workers leave")
        args = [a for q in queues for a in ("--queue", q)]
        self.workers = [self.procs.start("worker", "balancer.worker.cli", "start", *args,
                                         "--concurrency", str(concurrency), "--pool", "process")
                        for _ in range(n)]
        self._until(lambda: all(self.client.zcard(self.keys(p).workers) == n
                                for p in range(self.count)),
                    "every worker registered in every partition")

    def _until(self, predicate: Callable[[], object], what: str) -> None:
        def alive_and() -> object:
            for proc in [*self.serves, *self.workers]:
                if proc.poll() is not None:
                    raise RuntimeError(f"pid {proc.pid} exited with {proc.returncode}:\n"
                                       + self.procs.tail(proc))
            return predicate()

        wait_until(alive_and, what, READY_TIMEOUT)

    def leaders(self) -> dict[int, int]:
        """partition -> the pid of the serve leading it (partitions led by none left out)."""
        out = {}
        for p in range(self.count):
            raw = self.client.get(self.keys(p).leader)
            if raw:
                out[p] = dispatcher_pid(raw.decode().split("|", 1)[1])
        return out

    def submit(self, flow: Flow) -> FlowRun:
        return flow.submit(self.client, namespace=self.namespace)

    def task_fields(self, run: FlowRun, *names: str) -> list[list[bytes | None]]:
        return [self.client.hmget(run.keys.task(t), list(names)) for t in run.task_ids]

    def stop(self) -> None:
        self.procs.stop_all()
        self.client.close()


# -- workloads -------------------------------------------------------------------------


def throughput(bench: Bench, tasks: int, flows: int, timeout: float) -> Figures:
    """``tasks`` no-ops in ``flows`` flows, submitted at once, spread by their ids."""
    per_flow = tasks // flows
    for run in [bench.submit(many_noops(f"warmup-{i}", 20)) for i in range(3 * bench.count)]:
        check(run.wait(timeout), "warm-up")
    masters = bench.local.masters()
    owner = {p: bench.local.owner_of_key(bench.keys(p).prefix).port for p in range(bench.count)}
    calls0 = bench.local.commands_per_master()
    cpu0 = {m.port: redis_cpu(redis.Redis(port=m.port)) for m in masters}
    serve0 = {s.pid: cpu_seconds(s.pid) for s in bench.serves}
    workers0 = sum(tree_cpu(w.pid) for w in bench.workers)
    start = time.perf_counter()
    runs = [bench.submit(many_noops(f"throughput-{i}", per_flow)) for i in range(flows)]
    submitted = time.perf_counter() - start
    for run in runs:
        check(run.wait(timeout), f"flow {run.id}")
    seconds = time.perf_counter() - start
    calls = {port: n - calls0[port] for port, n in bench.local.commands_per_master().items()}
    total = per_flow * flows
    by_partition = Counter(partitions.of_flow(r.id) for r in runs)
    led = bench.leaders()
    shards = []
    for m in masters:
        held = sorted(p for p, port in owner.items() if port == m.port)
        mine = sum(by_partition[p] for p in held) * per_flow
        cpu = redis_cpu(redis.Redis(port=m.port)) - cpu0[m.port]
        shards.append({"port": m.port, "partitions": held, "tasks": mine,
                       "commands": calls[m.port],
                       "commands_per_task": round(calls[m.port] / mine, 2) if mine else None,
                       "redis_cpu_us_per_task": round(cpu * 1e6 / mine, 1) if mine else None})
    serves = []
    for s in bench.serves:
        held = sorted(p for p, pid in led.items() if pid == s.pid)
        mine = sum(by_partition[p] for p in held) * per_flow
        cpu = cpu_seconds(s.pid) - serve0[s.pid]
        serves.append({"pid": s.pid, "partitions": held, "tasks": mine,
                       "cpu_s": round(cpu, 3),
                       "cpu_us_per_task_led": round(cpu * 1e6 / mine, 1) if mine else None})
    counts = [s["commands"] for s in shards]
    return {"tasks": total, "flows": flows, "submit_s": round(submitted, 3),
            "seconds": round(seconds, 3), "tasks_per_s": round(total / seconds, 1),
            "flows_per_partition": dict(sorted(by_partition.items())), "shards": shards,
            "commands_max_over_min": round(max(counts) / max(1, min(counts)), 3),
            "serves": serves,
            "serves_cpu_us_per_task": round(sum(s["cpu_s"] for s in serves) * 1e6 / total, 1),
            "workers_cpu_us_per_task": round(
                (sum(tree_cpu(w.pid) for w in bench.workers) - workers0) * 1e6 / total, 1)}


def makespan(bench: Bench, cfg: Config, timeout: float) -> Figures:
    """Workload 3 of bench/compare, each task a flow of its own (so spread over the
    partitions): its makespan over the greedy and the optimal schedule of 4 slots."""
    slots = 4
    durations = makespan_durations(cfg)
    t0 = time.time()
    runs = []
    for i, d in enumerate(durations):
        with Flow(f"makespan-{i}") as flow:
            nap(d, i)
        runs.append(bench.submit(flow))
    for run in runs:
        check(run.wait(sum(durations) + timeout), f"flow {run.id}")
    records = [(partitions.of_flow(run.id), d, *bench.task_fields(run, "finished", "worker")[0])
               for run, d in zip(runs, durations)]
    span = max(int(finished or 0) for _, _, finished, _ in records) / 1000 - t0
    greedy, lpt = schedule.greedy(durations, slots), schedule.lpt(durations, slots)
    longest = max(durations)
    return {"tasks": len(durations), "makespan_s": round(span, 3),
            "greedy_s": round(greedy, 3), "optimal_s": round(lpt, 3),
            "over_greedy": round(span / greedy, 3), "over_optimal": round(span / lpt, 3),
            "tasks_per_partition": dict(sorted(Counter(p for p, *_ in records).items())),
            "long_per_partition": dict(sorted(Counter(
                p for p, d, *_ in records if d == longest).items())),
            "tasks_per_worker": dict(sorted(Counter(
                (w or b"?").decode() for *_, w in records).items()))}


@dataclass(frozen=True)
class Ran:
    partition: int
    high: bool
    queued: int  # ms: when its submit returned (the task was queued by then)
    started: int  # ms
    finished: int  # ms


def dispatch_inversions(leases: list[tuple[int, str, int]], highs_ready: list[int]) -> int:
    """Lows leased while a high of the same partition was ready and not yet leased.

    ``leases``: (ms, queue, tasks) of the partition's dispatch events in stream order;
    ``highs_ready``: when each of its highs was queued for sure (ms: its submit had
    returned). A high leased in the same millisecond as a low counts as leased first (one
    dispatch round leases both)."""
    inversions, leased_high = 0, 0
    by_ms: dict[int, list[tuple[str, int]]] = {}
    for at, queue, n in leases:
        by_ms.setdefault(at, []).append((queue, n))
    for at, group in sorted(by_ms.items()):
        leased_high += sum(n for q, n in group if q == HIGH)
        waiting = sum(1 for r in highs_ready if r < at) - leased_high
        if waiting > 0:
            inversions += sum(n for q, n in group if q == LOW)
    return inversions


def priority(bench: Bench, lows: int, highs: int, task_s: float, timeout: float) -> Figures:
    """A backlog of ``lows`` low-priority sleeps, then ``highs`` high-priority ones."""
    since_ms = int(time.time() * 1000) - 5000  # Redis runs on this machine's clock
    # (high or low, the run, when its submit returned: ms of this machine's clock, which
    # the Redis servers on it share; the task's own "ready" is the client's clock before
    # the submit was sent, a millisecond or two early)
    runs: list[tuple[bool, FlowRun, int]] = []
    for i in range(lows + highs):
        if i == lows:
            time.sleep(task_s * 4)  # the backlog is running
        high = i >= lows
        with Flow(f"{'high' if high else 'low'}-{i}") as flow:
            (nap_high if high else nap_low)(task_s, i)
        run = bench.submit(flow)
        runs.append((high, run, int(time.time() * 1000)))
    for _, run, _ in runs:
        check(run.wait(timeout + task_s * (lows + highs)), f"flow {run.id}")
    ran = []
    for high, run, queued in runs:
        started, finished = (int(v or 0) for v in bench.task_fields(
            run, "started", "finished")[0])
        ran.append(Ran(partitions.of_flow(run.id), high, queued, started, finished))
    inversions = 0
    for p in range(bench.count):
        leases = []
        for sid, fields in bench.client.xrange(bench.keys(p).events, min=since_ms):
            for e in events.decode(sid, fields):
                if e.kind == events.DISPATCH and e.queue in (HIGH, LOW):
                    leases.append((e.at_ms, e.queue, e.count or 0))
        inversions += dispatch_inversions(
            leases, [r.queued for r in ran if r.high and r.partition == p])
    ahead_same = ahead_other = 0
    for h in (r for r in ran if r.high):
        for low in (r for r in ran if not r.high and h.queued < r.started < h.started):
            if low.partition == h.partition:
                ahead_same += 1
            else:
                ahead_other += 1
    waits = [(r.started - r.queued) / 1000 for r in ran if r.high]
    backlog_end = max(r.finished for r in ran if not r.high)
    return {"lows": lows, "highs": highs, "task_s": task_s,
            "highs_per_partition": dict(sorted(Counter(r.partition for r in ran
                                                       if r.high).items())),
            "inversions_at_dispatch_within_partition": inversions,
            "lows_started_while_a_high_of_their_partition_waited": ahead_same,
            "lows_started_while_a_high_of_another_partition_waited": ahead_other,
            "high_wait_mean_s": round(statistics.fmean(waits), 3),
            "high_wait_max_s": round(max(waits), 3),
            "highs_done_before_backlog": sum(1 for r in ran if r.high
                                             and r.finished <= backlog_end)}


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30000, help="throughput: no-op tasks")
    parser.add_argument("--flows", type=int, default=1000,
                        help="throughput: in this many flows (each placed by a hash of its"
                             " id: more flows spread the tasks more evenly)")
    parser.add_argument("--workers", type=int, default=2, help="throughput: worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="throughput: slots each")
    parser.add_argument("--serves", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--makespan-rounds", type=int, default=1)
    parser.add_argument("--lows", type=int, default=40, help="priority: the backlog")
    parser.add_argument("--highs", type=int, default=9)
    parser.add_argument("--workloads", default="throughput,makespan,priority")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 600 tasks in 30 flows, makespan at 1/10 of its"
                             " durations, 12 lows and 3 highs")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest wait per flow")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.flows, args.lows, args.highs = 600, 30, 12, 3
    if args.flows < 1 or args.tasks < args.flows:
        parser.error("--tasks must be at least --flows, and --flows at least 1")
    return args


def run(args: argparse.Namespace, bench: Bench) -> Figures:
    out: Figures = {}
    wanted = args.workloads.split(",")
    bench.start_serves(args.serves)
    if "throughput" in wanted:
        bench.start_workers(args.workers, args.concurrency, ("bench",))
        out["throughput"] = throughput(bench, args.tasks, args.flows, args.timeout)
        print(json.dumps(out["throughput"], indent=1), flush=True)
    if "makespan" in wanted:
        cfg = Config.quick() if args.quick else Config()
        bench.start_workers(2, 2, ("bench",))
        for run in [bench.submit(many_noops(f"warmup-{i}", 4)) for i in range(3 * bench.count)]:
            check(run.wait(args.timeout), "warm-up")
        out["makespan"] = [makespan(bench, cfg, args.timeout)
                           for _ in range(args.makespan_rounds)]
        print(json.dumps(out["makespan"], indent=1), flush=True)
    if "priority" in wanted:
        for queue, level in ((HIGH, "1"), (LOW, "0")):
            subprocess.run([sys.executable, "-m", "balancer.cli", "queue", "set", queue,
                            "--priority", level], cwd=ROOT, env=bench.procs.env, check=True,
                           capture_output=True, timeout=60)
        bench.start_workers(2, 1, (HIGH, LOW))
        out["priority"] = priority(bench, args.lows, args.highs,
                                   0.05 if not args.quick else 0.02, args.timeout)
        print(json.dumps(out["priority"], indent=1), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="cluster-partitions-"))
    load = os.getloadavg()[0]
    local = LocalCluster().start()
    bench = None
    try:
        namespace = local.spread_namespace(f"cpb-{uuid.uuid4().hex[:6]}", args.partitions)
        bench = Bench(local, namespace, args.partitions, logdir)
        print(f"cluster partitions bench: 3 masters + 3 replicas, namespace {namespace},"
              f" {args.partitions} partitions, {args.serves} serves, {os.cpu_count()} cores,"
              f" load {load:.1f}, logs {logdir}", flush=True)
        figures = run(args, bench)
    finally:
        if bench is not None:
            bench.stop()
        local.cleanup()
    figures.update(partitions=args.partitions, serves=args.serves, load_before=load,
                   load_after=os.getloadavg()[0], cores=os.cpu_count())
    print(summary(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def summary(f: Figures) -> str:
    lines = [f"{f['partitions']} partitions, {f['serves']} serves, {f['cores']} cores,"
             f" load {f['load_before']:.1f} -> {f['load_after']:.1f}"]
    if "throughput" in f:
        t = f["throughput"]
        lines.append(f"throughput: {t['tasks']} no-ops in {t['flows']} flows"
                     f" {t['flows_per_partition']}: {t['tasks_per_s']} tasks/s;"
                     f" serves {t['serves_cpu_us_per_task']} us/task in all, workers"
                     f" {t['workers_cpu_us_per_task']} us/task")
        for s in t["shards"]:
            lines.append(f"  master :{s['port']} partitions {s['partitions']}:"
                         f" {s['commands']} commands ({s['commands_per_task']}/task),"
                         f" Redis CPU {s['redis_cpu_us_per_task']} us/task")
        lines.append(f"  commands max/min over the masters: {t['commands_max_over_min']}")
        for s in t["serves"]:
            lines.append(f"  serve pid {s['pid']} led {s['partitions']}: {s['cpu_s']} s CPU,"
                         f" {s['cpu_us_per_task_led']} us per task it led")
    for m in f.get("makespan", []):
        lines.append(f"makespan: {m['makespan_s']} s, {m['over_greedy']} x greedy"
                     f" ({m['greedy_s']} s), {m['over_optimal']} x optimal; long tasks per"
                     f" partition {m['long_per_partition']}, per worker {m['tasks_per_worker']}")
    if "priority" in f:
        p = f["priority"]
        lines.append(f"priority: {p['lows']} lows then {p['highs']} highs"
                     f" {p['highs_per_partition']}: inversions at dispatch within a partition"
                     f" {p['inversions_at_dispatch_within_partition']}; lows started while a"
                     f" high waited: same partition"
                     f" {p['lows_started_while_a_high_of_their_partition_waited']}, others"
                     f" {p['lows_started_while_a_high_of_another_partition_waited']};"
                     f" high wait mean {p['high_wait_mean_s']} s, max {p['high_wait_max_s']} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
