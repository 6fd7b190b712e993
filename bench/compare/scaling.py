"""Workloads of issue 17 that run on every layout of ``--layouts``: latency under an
open-loop load, and the resident memory of idle workers and of the dispatcher."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import redis

from bench.compare.base import ROOT, Layout, System, redis_cpu
from bench.compare.loadgen import poisson_arrivals, tag
from bench.compare.procs import MB, tree_pss, tree_rss
from bench.compare.records import Incomplete, Records
from bench.compare.workloads import Config, Figures, percentile

SETTLE_S = 1.0  # before reading memory: the last tasks' acks and pool bookkeeping done
LOADGEN_LOG_TAIL = 15


def under_load(system: System, rec: Records, broker: redis.Redis, cfg: Config,
               layout: Layout, capacity: float, fraction: float) -> Figures:
    """Single no-ops arriving as a Poisson stream at ``fraction`` x ``capacity`` per second,
    submitted one per call by a separate process (``loadgen``); latency from the start of
    a submit call to the harness seeing the task's record, as workload 2 measures it."""
    if not capacity > 0:
        raise ValueError(f"no capacity measured on {layout.label} (throughput {capacity})")
    rate = capacity * fraction
    seed = cfg.seed * 1000 + round(fraction * 100) + 10 * layout.workers + layout.slots
    arrivals = poisson_arrivals(rate, cfg.load_seconds, random.Random(seed))
    if not arrivals:
        raise ValueError(f"no arrival in {cfg.load_seconds}s at {rate:.3g}/s")
    key = rec.new_key(f"load{round(fraction * 100)}")
    stem = system.logdir / key.replace(":", "-")
    arrivals_file, out_file, log_file = (stem.with_suffix(s) for s in (".in.json",
                                                                       ".out.json", ".log"))
    arrivals_file.write_text(json.dumps(arrivals))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "bench.compare.loadgen", "--system", system.name,
            "--broker-url", system.broker_url, "--record-url", system.record_url,
            "--key", key, "--arrivals", str(arrivals_file), "--out", str(out_file),
            "--layout", layout.label]
    server0 = redis_cpu(broker)
    seen: dict[str, float] = {}
    with log_file.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        budget = 3 * cfg.load_seconds + cfg.timeout
        deadline = time.monotonic() + budget
        while len(seen) < len(arrivals):
            if proc.poll() not in (None, 0):
                tail = log_file.read_text(errors="replace").splitlines()[-LOADGEN_LOG_TAIL:]
                raise RuntimeError(f"loadgen exited with {proc.returncode}:\n"
                                   + "\n".join(tail))
            if time.monotonic() > deadline:
                raise Incomplete(key, len(seen), len(arrivals), budget)
            batch = rec.drain(key, 0.5)
            now = time.time()
            for r in batch:
                seen.setdefault(r.tag, now)  # a duplicate run is not the result
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        rec.drop(key)
        rec.drop(key + ":warmup")
    server_ms = (redis_cpu(broker) - server0) * 1000
    sent = json.loads(out_file.read_text())
    started: list[float] = sent["started"]
    ms = [(seen[tag(i)] - t) * 1000 for i, t in enumerate(started)]
    late = [x * 1000 for x in sent["late"]]
    return {"layout": layout.label, "fraction": fraction, "capacity_per_s": capacity,
            "rate_per_s": rate, "tasks": len(arrivals),
            "achieved_per_s": len(arrivals) / sent["seconds"],
            "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms),
            "late_p99_ms": percentile(late, 99),
            "redis_cpu_ms_per_task": server_ms / len(arrivals)}


def memory(system: System, layout: Layout) -> Figures:
    """Resident memory of the idle workers (each with its pool children) and of the
    dispatcher, summed over process trees; per worker command and per slot."""
    time.sleep(SETTLE_S)
    if system.launcher is not None:
        system.launcher.check_alive()
    workers = sum(tree_rss(pid) for pid in system.worker_pids)
    dispatchers = system.dispatcher_pids()
    dispatcher = sum(tree_rss(pid) for pid in dispatchers)
    # PSS as well: RSS counts a page a forked child shares with its parent once per
    # process (Celery's and Huey's forked pools, RQ's horses); PSS splits it among them.
    pss = sum(tree_pss(pid) for pid in [*system.worker_pids, *dispatchers])
    slots = layout.workers * layout.slots
    return {"layout": layout.label, "worker_commands": len(system.worker_pids),
            "worker_mb": workers / layout.workers / MB,
            "dispatcher_mb": dispatcher / MB if dispatchers else None,
            "worker_mb_per_slot": workers / slots / MB,
            "mb_per_slot": (workers + dispatcher) / slots / MB,
            "pss_mb_per_slot": pss / slots / MB if pss else None}
