"""Heartbeats: host load as a worker reports it (pressure from other processes on its own
cores), and which beats go out in full and which light."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import psutil
import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.worker.heartbeat import FULL_EVERY, Heartbeat, HostLoad


def _foreign_hog(core: int) -> int:
    """A busy process pinned to ``core`` that is not this process's child (its parent
    shell exits at once), as another program on the host would be."""
    out = subprocess.run(
        ["bash", "-c", f"taskset -c {core} python3 -c 'while True: pass' >/dev/null 2>&1 &"
                       " echo $!"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


# Sampled in a process of its own: this one (pytest) may have threads busy on another core
# from earlier tests, and a worker takes its own use out process-wide.
SAMPLE = """
import json, sys, time
from balancer.worker.heartbeat import HostLoad
host = HostLoad()
host.cores = [int(sys.argv[1])]
host.sample()
time.sleep(1.0)
cpu, pressure, memory, _ = host.sample()
print(json.dumps([cpu, pressure, memory]))
"""


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
def test_a_busy_foreign_process_on_the_workers_core_shows_as_pressure() -> None:
    core = max(os.sched_getaffinity(0))
    pid = _foreign_hog(core)
    try:
        hog = psutil.Process(pid)
        used0, t0 = sum(hog.cpu_times()[:2]), time.monotonic()
        out = subprocess.run([sys.executable, "-c", SAMPLE, str(core)], capture_output=True,
                             text=True, check=True, timeout=60)
        share = (sum(hog.cpu_times()[:2]) - used0) / (time.monotonic() - t0)
    finally:
        os.kill(pid, signal.SIGKILL)
    cpu, pressure, memory = json.loads(out.stdout)
    # What the hog got of the core depends on what else the machine runs; whatever it
    # got shows as pressure (none of it is the sampling process's), give or take the
    # sampling windows, which differ a little.
    assert share > 0.2
    assert pressure >= share - 0.2, (pressure, share)
    assert cpu >= pressure
    assert 0.0 < memory < 1.0


def test_the_workers_own_work_is_not_pressure() -> None:
    host = HostLoad()
    host.sample()
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # this process keeps one core busy
        pass
    cpu, pressure, _, _ = host.sample()
    assert pressure <= cpu
    assert cpu - pressure >= 0.25 / len(host.cores)  # our own use was taken out


class Reports:
    """What the worker would report next; tests change it between beats."""

    def __init__(self) -> None:
        self.info = WorkerInfo("w", ("q",), 2, pressure=0.2, durations={"q": 10.0})

    def __call__(self) -> WorkerInfo:
        return self.info


@pytest.fixture
def beats(fake: redis.Redis, settings: Settings) -> tuple[Heartbeat, Reports, Keys]:
    keys = Keys(settings.namespace)
    reports = Reports()
    heartbeat = Heartbeat("w", Scripts(fake, keys), settings, reports, threading.Event())
    heartbeat.beat()
    return heartbeat, reports, keys


def signals_after_tick(fake: redis.Redis, keys: Keys, heartbeat: Heartbeat) -> int:
    before = fake.llen(keys.wake)
    heartbeat.tick()
    return fake.llen(keys.wake) - before


def test_an_unchanged_worker_beats_light_and_in_full_every_few_beats(
        fake: redis.Redis, beats: tuple[Heartbeat, Reports, Keys]) -> None:
    heartbeat, _, keys = beats
    dated = fake.zscore(keys.workers, "w")
    sent = [signals_after_tick(fake, keys, heartbeat) for _ in range(2 * FULL_EVERY)]
    assert sent == ([0] * (FULL_EVERY - 1) + [1]) * 2
    assert fake.zscore(keys.workers, "w") >= dated  # light beats dated it all along


def test_jitter_of_load_stays_light_but_a_change_the_dispatcher_uses_is_sent_at_once(
        fake: redis.Redis, beats: tuple[Heartbeat, Reports, Keys]) -> None:
    heartbeat, reports, keys = beats
    reports.info = replace(reports.info, pressure=0.25, durations={"q": 11.0}, cpu=0.9)
    assert signals_after_tick(fake, keys, heartbeat) == 0
    for change in ({"running": 1}, {"long_running": 1}, {"capacity": 0},
                   {"pressure": 0.5}, {"durations": {"q": 30.0}}):
        reports.info = replace(reports.info, **change)
        assert signals_after_tick(fake, keys, heartbeat) == 1, change
        assert signals_after_tick(fake, keys, heartbeat) == 0, change


def test_a_reaped_worker_registers_again_at_its_next_beat(
        fake: redis.Redis, beats: tuple[Heartbeat, Reports, Keys]) -> None:
    heartbeat, _, keys = beats
    fake.delete(keys.worker("w"))
    fake.zrem(keys.workers, "w")
    assert signals_after_tick(fake, keys, heartbeat) == 1
    assert fake.hget(keys.worker("w"), "info") is not None


def test_a_hurried_heartbeat_goes_out_in_full_at_once(
        real: redis.Redis, settings: Settings) -> None:
    keys = Keys(settings.namespace)
    reports, stopping = Reports(), threading.Event()
    slow = settings.replace(heartbeat_interval=60.0)
    heartbeat = Heartbeat("w", Scripts(real, keys), slow, reports, stopping)
    heartbeat.beat()
    real.delete(keys.wake)
    heartbeat.start()
    try:
        heartbeat.hurry()
        deadline = time.monotonic() + 10
        while not real.llen(keys.wake) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert real.llen(keys.wake) == 1  # a full beat, long before the interval
    finally:
        stopping.set()
        heartbeat.hurry()
        heartbeat.join(5)
    assert not heartbeat.is_alive()


def test_an_error_reply_is_retried_and_a_broken_thread_tells_the_worker_to_stop(
        fake: redis.Redis, settings: Settings) -> None:
    keys = Keys(settings.namespace)
    reports, stopping = Reports(), threading.Event()
    fast = settings.replace(heartbeat_interval=0.01)
    heartbeat = Heartbeat("w", Scripts(fake, keys), fast, reports, stopping)
    calls: list[str] = []

    def failing(full: bool = False) -> None:
        calls.append("tick")
        if len(calls) <= 3:
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
        raise RuntimeError("a bug in the heartbeat")

    heartbeat.tick = failing  # type: ignore[method-assign]
    heartbeat.start()
    heartbeat.join(10)
    assert not heartbeat.is_alive()
    assert len(calls) == 4  # three error replies retried; the bug ended the thread
    assert heartbeat.failed.is_set()  # and the worker is told to stop (Worker.run exits 1)
