"""The workloads of issue 4 that every system runs, written against ``System`` only.

Each takes a started system, the record Redis and the system's private Redis, and
returns its figures. Times come from the tasks' own records (start, finish) and the
harness's clock around enqueue calls: one machine, one clock.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import redis

from bench.compare import schedule
from bench.compare.base import (
    Job,
    Launcher,
    Layout,
    System,
    command_breakdown,
    commands_since,
    python,
    redis_cpu,
    top,
)
from bench.compare.procs import total_cpu
from bench.compare.records import Incomplete, Record, Records

Figures = dict[str, Any]
HOGS = 2


@dataclass(frozen=True)
class Config:
    """Sizes of every workload; ``quick()`` makes them all small."""

    throughput_tasks: int = 10_000
    singles: int = 500
    scale: float = 1.0  # multiplies the durations of workloads 3, 3b and 5
    long_s: float = 2.0
    short_s: float = 0.05
    hetero_long: int = 10
    hetero_short: int = 30
    seed: int = 4
    trap_long: int = 2
    trap_short: int = 20
    uneven_tasks: int = 60
    uneven_task_s: float = 0.1
    uneven_turns: int = 0  # loop turns of one CPU task; 0: calibrate (the runner does, once)
    priority_seconds: float = 6.0
    priority_task_s: float = 0.05
    priority_overload: float = 1.25  # the high stream, as a multiple of the slots' capacity
    priority_lows: int = 5
    flow_width: int = 1000
    flow_layers: int = 10
    idle_workers: int = 10
    idle_seconds: float = 10.0
    sim_workers: int = 1000
    sim_rate: float = 500.0
    sim_seconds: float = 10.0
    sim_batch: int = 50
    timeout: float = 300.0  # longest wait for one workload's tasks
    throughput_budget: float = 120.0  # then workload 1 reports the rate so far, as partial
    submit_calls: int = 2000  # single-task submit calls, one after another
    submit_mode: str = "single"  # throughput: one call per task, or "batch" (see SUBMIT_MODES)
    load_seconds: float = 5.0  # length of each open-loop stream
    load_fractions: tuple[float, ...] = (0.5, 0.8)  # of the capacity measured on the layout

    @classmethod
    def quick(cls) -> Config:
        return cls(throughput_tasks=300, singles=30, scale=0.1, uneven_tasks=20,
                   uneven_task_s=0.02, priority_seconds=1.0, priority_task_s=0.02,
                   flow_width=100, flow_layers=5, idle_workers=3, idle_seconds=1.0,
                   sim_workers=50, sim_rate=100.0, sim_seconds=1.5, sim_batch=10,
                   timeout=60.0, throughput_budget=30.0, submit_calls=100,
                   load_seconds=1.0)


SUBMIT_MODES = {
    "single": "one submit call per task for every system (ours: a one-task Flow per call)",
    "batch": "each system's documented batch submit (ours: one Flow; RQ: enqueue_many;"
             " the others have none, one call per task)",
}


def submit_all(system: System, jobs: list[Job], mode: str) -> None:
    if mode == "batch":
        system.submit(jobs)
    elif mode == "single":
        for job in jobs:
            system.submit([job])
    else:
        raise ValueError(f"submit mode {mode!r} is not one of {sorted(SUBMIT_MODES)}")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ready(system: System, indices: list[int], rec: Records, layout: Layout,
          timeout: float = 90.0) -> None:
    """Until every worker command has run a task (and every ping is done)."""
    if not indices:
        return
    # Workers of a priority layout serve only the high and low queues.
    kind, prio = ("sleep", "low") if layout.priority else ("noop", None)
    key = rec.new_key("ready")
    deadline = time.monotonic() + timeout
    sent, seen, turn = 0, set(), 0
    while not set(indices) <= seen:
        assert system.launcher is not None
        system.launcher.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{system.name}: workers {sorted(set(indices) - seen)} ran no"
                               f" task within {timeout:.0f}s")
        n = 2 * len(indices)
        system.submit([Job(kind, key, f"ping-{turn}-{i}", 0.0, prio) for i in range(n)])
        sent, turn = sent + n, turn + 1
        end = min(deadline, time.monotonic() + 5)
        while rec.count(key) < sent and time.monotonic() < end:
            time.sleep(0.02)
        seen = {r.worker for r in rec.read(key)}
    rec.wait(key, sent, max(1.0, deadline - time.monotonic()))
    time.sleep(0.3)
    rec.drop(key)


def throughput(system: System, rec: Records, broker: redis.Redis, cfg: Config) -> Figures:
    """Workload 1: N no-ops enqueued at once (``cfg.submit_mode``); enqueue rate and
    end-to-end tasks/s; Redis commands and CPU per task, the workers' and dispatcher's CPU.

    A system still busy after ``throughput_budget`` seconds gets the rate it reached so
    far, marked partial (the runner then restarts it before the next workload)."""
    n, key = cfg.throughput_tasks, rec.new_key("throughput")
    jobs = [Job("noop", key, str(i)) for i in range(n)]
    pids = [*system.worker_pids, *system.dispatcher_pids()]
    before = command_breakdown(broker)
    cpu0, server0 = total_cpu(pids), redis_cpu(broker)
    t0, p0 = time.time(), time.perf_counter()
    submit_all(system, jobs, cfg.submit_mode)
    enqueue_s = time.perf_counter() - p0
    try:
        records, partial = rec.wait(key, n, cfg.throughput_budget), False
    except Incomplete:
        records, partial = rec.read(key), True
        if not records:
            raise
    cpu1, server1 = total_cpu(pids), redis_cpu(broker)
    delta = commands_since(broker, before)
    calls = sum(delta.values())
    done = len(records)
    total_s = max(r.finish for r in records) - t0
    return {"tasks": n, "submit_mode": cfg.submit_mode, "completed": done, "partial": partial,
            "enqueue_s": enqueue_s,
            "enqueue_per_s": n / enqueue_s, "end_to_end_s": total_s,
            "tasks_per_s": done / total_s, "redis_calls": calls,
            "redis_cmds_per_task": calls / done,
            "redis_cpu_ms_per_task": (server1 - server0) * 1000 / done,
            "cpu_ms_per_task": (cpu1 - cpu0) * 1000 / done,
            "per_task_by_command": top(delta, done)}


def latency(system: System, rec: Records, broker: redis.Redis, cfg: Config) -> Figures:
    """Workload 2: single tasks one after another on idle workers, submit to recorded."""
    key, out = rec.new_key("latency"), []
    server0 = redis_cpu(broker)
    for i in range(cfg.singles):
        p0 = time.perf_counter()
        system.submit([Job("noop", key, str(i))])
        rec.pop(key, 30.0)
        out.append((time.perf_counter() - p0) * 1000)
    server_ms = (redis_cpu(broker) - server0) * 1000
    return {"singles": cfg.singles, "p50_ms": percentile(out, 50), "p99_ms": percentile(out, 99),
            "max_ms": max(out), "mean_ms": statistics.fmean(out),
            "redis_cpu_ms_per_task": server_ms / cfg.singles}


def submit_singles(system: System, rec: Records, broker: redis.Redis, cfg: Config) -> Figures:
    """Single-task submits, one call each, back to back (ours: a one-task ``Flow`` per
    call): calls per second, then the tasks/s those calls fed end to end."""
    n, key = cfg.submit_calls, rec.new_key("submit")
    jobs = [Job("noop", key, str(i)) for i in range(n)]
    server0 = redis_cpu(broker)
    t0, p0 = time.time(), time.perf_counter()
    for job in jobs:
        system.submit([job])
    calls_s = time.perf_counter() - p0
    records = rec.wait(key, n, cfg.timeout)
    server_ms = (redis_cpu(broker) - server0) * 1000
    rec.drop(key)
    return {"calls": n, "calls_s": calls_s, "calls_per_s": n / calls_s,
            "tasks_per_s": n / (max(r.finish for r in records) - t0),
            "redis_cpu_ms_per_task": server_ms / n}


def _makespan(system: System, rec: Records, durations: list[float], slots: int,
              what: str, cfg: Config) -> tuple[float, list[Record], float]:
    key = rec.new_key(what)
    jobs = [Job("sleep", key, str(i), d) for i, d in enumerate(durations)]
    t0, p0 = time.time(), time.perf_counter()
    system.submit(jobs)
    enqueue_s = time.perf_counter() - p0
    records = rec.wait(key, len(jobs), sum(durations) / slots + cfg.timeout)
    return max(r.finish for r in records) - t0, records, enqueue_s


def makespan_durations(cfg: Config) -> list[float]:
    """Workload 3's sleeps: long and short ones, shuffled with a fixed seed."""
    durations = ([cfg.long_s * cfg.scale] * cfg.hetero_long
                 + [cfg.short_s * cfg.scale] * cfg.hetero_short)
    random.Random(cfg.seed).shuffle(durations)
    return durations


def makespan(system: System, rec: Records, broker: redis.Redis, cfg: Config) -> Figures:
    """Workload 3: 2 workers x 2 slots, long and short sleeps shuffled, submitted at once."""
    slots = 4
    durations = makespan_durations(cfg)
    span, records, enqueue_s = _makespan(system, rec, durations, slots, "makespan", cfg)
    greedy, lpt = schedule.greedy(durations, slots), schedule.lpt(durations, slots)
    return {"tasks": len(durations), "makespan_s": span, "greedy_s": greedy, "optimal_s": lpt,
            "optimal_is_exact": math.isclose(lpt, schedule.lower_bound(durations, slots)),
            "over_greedy": span / greedy, "over_optimal": span / lpt, "enqueue_s": enqueue_s,
            "tasks_per_worker": _per_worker(records)}


def prefetch_trap(system: System, rec: Records, broker: redis.Redis, cfg: Config) -> Figures:
    """Workload 3b: 2 workers x 1 slot; 2 long sleeps, then 20 short ones."""
    slots = 2
    durations = ([cfg.long_s * cfg.scale] * cfg.trap_long
                 + [cfg.short_s * cfg.scale] * cfg.trap_short)
    span, records, enqueue_s = _makespan(system, rec, durations, slots, "trap", cfg)
    reference = schedule.greedy(durations, slots)
    return {"tasks": len(durations), "makespan_s": span, "reference_s": reference,
            "over_reference": span / reference, "enqueue_s": enqueue_s,
            "tasks_per_worker": _per_worker(records)}


def _per_worker(records: list[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[str(r.worker)] = counts.get(str(r.worker), 0) + 1
    return dict(sorted(counts.items()))


def calibrate(seconds: float) -> int:
    """Loop turns of ``work.spin`` that take about ``seconds`` on this machine, now."""
    from bench.compare.work import spin

    turns, took = 20_000, 0.0
    while took < 0.05:
        turns *= 2
        p0 = time.perf_counter()
        spin(turns)
        took = time.perf_counter() - p0
    return max(1, int(turns * seconds / took))


def uneven(system: System, rec: Records, broker: redis.Redis, cfg: Config) -> Figures:
    """Workload 4: CPU-bound tasks; worker 0 alone on core 0, worker 1 on core 1 with
    ``HOGS`` busy loops (so it gets about a third of that core)."""
    import os

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError("needs 2 cores to pin a worker per core")
    turns = cfg.uneven_turns or calibrate(cfg.uneven_task_s)
    hog = Launcher(system.logdir, dict(os.environ))
    try:
        for _ in range(HOGS):
            hog.spawn("cpu-hog", python("-c", "while True: pass"), cpu=cores[1])
        time.sleep(0.5)
        key = rec.new_key("uneven")
        jobs = [Job("cpu", key, str(i), turns) for i in range(cfg.uneven_tasks)]
        t0 = time.time()
        system.submit(jobs)
        records = rec.wait(key, len(jobs), cfg.uneven_tasks * cfg.uneven_task_s * 4
                           + cfg.timeout)
    finally:
        hog.stop_all()
    span = max(r.finish for r in records) - t0
    by_worker = {w: [r.finish - r.start for r in records if r.worker == w] for w in (0, 1)}
    speed = {w: 1 / statistics.fmean(d) if d else 0.0 for w, d in by_worker.items()}
    ideal = len(jobs) / (speed[0] + speed[1]) if speed[0] + speed[1] else float("nan")
    busy_share = len(by_worker[1]) / len(jobs)
    return {"tasks": len(jobs), "turns": turns, "makespan_s": span,
            "share_free_host": len(by_worker[0]) / len(jobs), "share_busy_host": busy_share,
            "ideal_busy_share": speed[1] / (speed[0] + speed[1]) if speed[0] else None,
            "mean_task_s": {str(w): statistics.fmean(d) if d else None
                            for w, d in by_worker.items()},
            "ideal_makespan_s": ideal, "over_ideal": span / ideal}


def priority(system: System, rec: Records, broker: redis.Redis, cfg: Config) -> Figures:
    """Workload 5: a high-priority stream above capacity plus a few low-priority tasks."""
    d = cfg.priority_task_s
    rate = cfg.priority_overload * 2 / d  # 2 workers x 1 slot
    n_high = int(rate * cfg.priority_seconds)
    key = rec.new_key("priority")
    plan = [(i / rate, Job("sleep", key, f"h{i}", d, "high")) for i in range(n_high)]
    plan += [(cfg.priority_seconds * 0.5 * (k + 1) / (cfg.priority_lows + 1),
              Job("sleep", key, f"l{k}", d, "low")) for k in range(cfg.priority_lows)]
    plan.sort(key=lambda item: item[0])
    submitted: dict[str, float] = {}
    p0 = time.perf_counter()
    for at, job in plan:
        wait = at - (time.perf_counter() - p0)
        if wait > 0:
            time.sleep(wait)
        system.submit([job])
        submitted[job.tag] = time.time()  # after the call: the task is in the broker
    records = rec.wait(key, len(plan), n_high * d + cfg.timeout)
    starts = {r.tag: r.start for r in records}
    highs = [(submitted[t], s) for t, s in starts.items() if t.startswith("h")]
    lows = [(submitted[t], s) for t, s in starts.items() if t.startswith("l")]
    inverted = [sum(1 for hs, hst in highs if hs < ls < hst) for _, ls in lows]
    return {"highs": n_high, "lows": len(lows), "stream_per_s": rate,
            "inversions": sum(1 for n in inverted if n), "inverted_pairs": sum(inverted),
            "worst_low_wait_s": max(ls - lsub for lsub, ls in lows),
            "mean_high_wait_s": statistics.fmean(hst - hs for hs, hst in highs)}
