"""Workloads 6 and 7, which only our system runs: a large layered flow, an idle cluster,
and the dispatcher in front of many simulated workers."""

from __future__ import annotations

import json
import subprocess
import time

import psutil
from balancer.common.keys import Keys

from balancer import Flow
from bench.compare import ours_tasks
from bench.compare.base import (
    ROOT,
    Layout,
    command_breakdown,
    commands_since,
    python,
    top,
)
from bench.compare.ours import NAMESPACE, Ours
from bench.compare.workloads import Config, Figures

KEYS = Keys(NAMESPACE)
IDLE_SAMPLE_S = 3.0


def layered(system: Ours, cfg: Config) -> Figures:
    """Workload 6a: ``flow_layers`` layers of ``flow_width`` tasks, each task after two of
    the layer before; submit time, total time, Redis commands per task."""
    assert system.client is not None
    width = cfg.flow_width
    with Flow("layered") as flow:
        layer = [ours_tasks.step() for _ in range(width)]
        for _ in range(cfg.flow_layers - 1):
            layer = [ours_tasks.step(layer[i], layer[(i + 1) % width]) for i in range(width)]
    n = width * cfg.flow_layers
    before = command_breakdown(system.client)
    p0 = time.perf_counter()
    run = flow.submit(system.client, namespace=NAMESPACE)
    submit_s = time.perf_counter() - p0
    state = run.wait(cfg.timeout * 3)
    total_s = time.perf_counter() - p0
    delta = commands_since(system.client, before)
    calls = sum(delta.values())
    return {"tasks": n, "state": state, "submit_s": submit_s, "total_s": total_s,
            "tasks_per_s": n / total_s, "redis_calls": calls, "redis_cmds_per_task": calls / n,
            "per_task_by_command": top(delta, n)}


def idle(system: Ours, layout: Layout, cfg: Config) -> Figures:
    """Workload 6b: commands per second of an idle cluster of ``idle_workers`` workers."""
    assert system.client is not None and system.launcher is not None
    for _ in range(cfg.idle_workers - layout.workers):
        system.launcher.spawn("ours-idle", system.worker_argv(layout), system.env())
    deadline = time.monotonic() + 120
    while system.client.zcard(KEYS.workers) < cfg.idle_workers:
        system.launcher.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cfg.idle_workers} workers did not register within 120s")
        time.sleep(0.2)
    # Idle means settled: for its first seconds a started worker's host load moves (it and
    # its neighbours starting up), and each move is a full heartbeat. Wait as long as the
    # measurement lasts.
    time.sleep(cfg.idle_seconds)
    before = command_breakdown(system.client)
    time.sleep(cfg.idle_seconds)
    delta = commands_since(system.client, before)
    calls = sum(delta.values())
    return {"workers": cfg.idle_workers, "seconds": cfg.idle_seconds,
            "cmds_per_s": calls / cfg.idle_seconds,
            "per_s_by_command": top(delta, cfg.idle_seconds)}


def dispatcher_scale(system: Ours, cfg: Config) -> Figures:
    """Workload 7: ``sim_workers`` simulated workers and a steady stream of tasks:
    assignments per second and the dispatcher's CPU share (of one core)."""
    assert system.client is not None and system.launcher is not None
    assert system.dispatcher_pid is not None
    margin = 30.0
    with (system.logdir / "simworkers.log").open("wb") as log:
        sim = subprocess.Popen(
            python("-m", "bench.compare.simworkers", "--workers", str(cfg.sim_workers),
                   "--queue", ours_tasks.SIM, "--seconds", str(cfg.sim_seconds + margin)),
            cwd=ROOT, env={**system.launcher.env, **system.env()},
            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + margin
        while system.client.zcard(KEYS.workers) < cfg.sim_workers:
            if time.monotonic() > deadline or sim.poll() is not None:
                raise RuntimeError(f"simulated workers did not register (exit {sim.poll()})")
            time.sleep(0.2)
        time.sleep(1.5)  # the dispatcher takes in the first round of heartbeats
        dispatcher = psutil.Process(system.dispatcher_pid)
        cpu0, p0 = dispatcher.cpu_times(), time.perf_counter()
        time.sleep(IDLE_SAMPLE_S)  # heartbeats only
        cpu1, idle_s = dispatcher.cpu_times(), time.perf_counter() - p0
        idle_share = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / idle_s
        figures = ({"dispatcher_cpu_share_heartbeats_only": idle_share} | _stream(system, cfg)
                   | _sim_counts(sim))
        if figures.get("sim_error") or not figures.get("sim_completed"):
            raise RuntimeError(f"the simulated workers failed: {figures}")
        return figures
    finally:
        if sim.poll() is None:
            sim.kill()
        sim.wait(10)


def _stream(system: Ours, cfg: Config) -> Figures:
    assert system.client is not None and system.dispatcher_pid is not None
    dispatcher = psutil.Process(system.dispatcher_pid)
    every = cfg.sim_batch / cfg.sim_rate
    flows = int(cfg.sim_seconds / every)
    cpu0, p0 = dispatcher.cpu_times(), time.perf_counter()
    submit_s = 0.0
    for k in range(flows):
        wait = k * every - (time.perf_counter() - p0)
        if wait > 0:
            time.sleep(wait)
        with Flow("sim") as flow:
            for i in range(cfg.sim_batch):
                ours_tasks.simulated(i)
        s0 = time.perf_counter()
        flow.submit(system.client, namespace=NAMESPACE)
        submit_s += time.perf_counter() - s0
    wall = time.perf_counter() - p0
    cpu1 = dispatcher.cpu_times()
    depth = int(system.client.zcard(KEYS.queue(ours_tasks.SIM)))
    submitted = flows * cfg.sim_batch
    busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"workers": cfg.sim_workers, "stream_per_s": cfg.sim_rate, "seconds": wall,
            "submitted": submitted, "queued_at_end": depth,
            "assignments_per_s": (submitted - depth) / wall,
            "dispatcher_cpu_share": busy / wall, "client_submit_share": submit_s / wall}


def _sim_counts(sim: subprocess.Popen[bytes]) -> Figures:
    sim.terminate()  # the simulation prints its counts on the way out
    try:
        out, _ = sim.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        return {}
    lines = out.decode(errors="replace").strip().splitlines()
    if not lines:
        return {}
    try:
        counts = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {}
    return {"sim_" + k: v for k, v in counts.items()}
