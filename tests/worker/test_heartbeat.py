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
from typing import Any

import psutil
import pytest
import redis
from balancer.common import luasource
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
def _hog_and_sample(core: int) -> tuple[float, list[float]]:
    """(the share of ``core`` a foreign busy loop got, what a sample there reported)."""
    pid = _foreign_hog(core)
    try:
        hog = psutil.Process(pid)
        used0, t0 = sum(hog.cpu_times()[:2]), time.monotonic()
        out = subprocess.run([sys.executable, "-c", SAMPLE, str(core)], capture_output=True,
                             text=True, check=True, timeout=60)
        share = (sum(hog.cpu_times()[:2]) - used0) / (time.monotonic() - t0)
    finally:
        os.kill(pid, signal.SIGKILL)
    return share, json.loads(out.stdout)


def test_a_busy_foreign_process_on_the_workers_core_shows_as_pressure() -> None:
    core = max(os.sched_getaffinity(0))
    # What the hog gets of the core depends on what else the machine runs: on a machine
    # loaded enough to leave it under a fifth, the measurement is tried again.
    for _ in range(5):
        share, (cpu, pressure, memory) = _hog_and_sample(core)
        if share > 0.2:
            break
    else:
        pytest.skip(f"the machine left a busy loop only {share:.0%} of a core, five times")
    # Whatever it got shows as pressure (none of it is the sampling process's), give or
    # take the sampling windows, which differ a little.
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


class Pipelines:
    """Counts the pipelines a client runs and the commands in them; a heartbeat's script
    sent on its own (not pipelined) by that client is counted apart (the process's
    embedded cluster, which another test may have left running, beats on its own)."""

    def __init__(self, client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[list[str]] = []
        self.alone: list[str] = []
        real_pipeline = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            execute = pipe.execute

            def counted(*a: Any, **k: Any) -> Any:
                self.runs.append([str(c[0][0]) for c in pipe.command_stack])
                return execute(*a, **k)

            pipe.execute = counted  # type: ignore[method-assign]
            return pipe

        monkeypatch.setattr(client, "pipeline", pipeline)
        real_heartbeat = Scripts.heartbeat

        def alone(scripts: Scripts, *args: Any) -> Any:
            if scripts.client is client:
                self.alone.append(scripts.keys.prefix)
            return real_heartbeat(scripts, *args)

        monkeypatch.setattr(Scripts, "heartbeat", alone)


@pytest.fixture
def three(real: redis.Redis, settings: Settings) -> tuple[Heartbeat, Reports, list[Keys]]:
    """A heartbeat over 3 partitions, registered (the script loaded: no NOSCRIPT)."""
    keys = Keys(settings.namespace)
    every = [keys.of(p) for p in range(3)]
    real.script_load(luasource.source("heartbeat"))
    reports = Reports()
    parts = [Scripts(real, k) for k in every]
    return Heartbeat("w", parts[0], settings, reports, threading.Event(), parts), reports, every


def test_a_worker_of_3_partitions_beats_in_full_in_every_one_in_one_round_trip(
        real: redis.Redis, three: tuple[Heartbeat, Reports, list[Keys]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    heartbeat, _, every = three
    real.sadd(every[1].leases("w"), "t1|a", "t2|b")
    sent = Pipelines(real, monkeypatch)
    assert heartbeat.beat() is False  # not registered before
    assert sent.runs == [["EVALSHA"] * 3] and sent.alone == []
    for k in every:  # registered in each, and each partition's dispatcher told
        assert real.hget(k.worker("w"), "info") is not None
        assert real.zscore(k.workers, "w") is not None
        assert real.llen(k.wake) == 1
    assert heartbeat.leased_in == [0, 2, 0]  # each partition's own count


def test_a_light_beat_of_3_partitions_is_one_round_trip_of_a_zadd_each(
        real: redis.Redis, three: tuple[Heartbeat, Reports, list[Keys]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    heartbeat, _, every = three
    heartbeat.beat()
    dated = [real.zscore(k.workers, "w") for k in every]
    time.sleep(0.01)
    sent = Pipelines(real, monkeypatch)
    heartbeat.tick()
    assert sent.runs == [["ZADD"] * 3]
    assert all(real.zscore(k.workers, "w") > d for k, d in zip(every, dated))
    assert [real.llen(k.wake) for k in every] == [1, 1, 1]  # no signal: the full beat's only


def test_a_worker_reaped_in_one_partition_beats_in_full_again_at_its_next_beat(
        real: redis.Redis, three: tuple[Heartbeat, Reports, list[Keys]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    heartbeat, _, every = three
    heartbeat.beat()
    real.delete(every[2].worker("w"))
    real.zrem(every[2].workers, "w")
    sent = Pipelines(real, monkeypatch)
    heartbeat.tick()
    assert sent.runs == [["ZADD"] * 3, ["EVALSHA"] * 3]  # light, then in full
    assert real.hget(every[2].worker("w"), "info") is not None


def test_a_worker_of_one_partition_beats_without_a_pipeline_as_before(
        real: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys(settings.namespace)
    heartbeat = Heartbeat("w", Scripts(real, keys), settings, Reports(), threading.Event())
    sent = Pipelines(real, monkeypatch)
    heartbeat.beat()
    heartbeat.tick()
    assert sent.runs == [] and sent.alone == [keys.prefix]
    assert real.zscore(keys.workers, "w") is not None
