"""What every system adapter shares: jobs, worker layouts, the processes it starts.

An adapter (``ours.py``, ``celery_app.py``, ...) subclasses ``System``: it says which
commands start its workers for a ``Layout`` and how to enqueue ``Job``s; ``System`` starts
and stops those commands, each in its own session so its pool children go with it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 15.0
_SEQUENCE = itertools.count()  # log file names stay unique across a run


@dataclass(frozen=True)
class Job:
    """One task to enqueue: ``kind`` is noop, sleep (``arg`` s) or cpu (``arg`` turns)."""

    kind: str
    key: str  # the record list the task pushes to when done
    tag: str
    arg: float = 0.0
    priority: str | None = None  # "high" or "low" in the priority workload


@dataclass(frozen=True)
class Layout:
    """``workers`` worker commands ("hosts") with ``slots`` tasks at once each."""

    workers: int
    slots: int
    pin: bool = False  # worker i runs on core i only (taskset)
    priority: bool = False  # serve the high and low priority queues
    aging: bool = False  # ours: age low priorities (else aging is off)

    @property
    def label(self) -> str:
        """``2x1``: workers x slots, as ``--layouts`` spells it."""
        return f"{self.workers}x{self.slots}"


def parse_layouts(text: str) -> list[Layout]:
    """``"2x1,2x4,4x2"`` -> layouts, in that order; ValueError naming a bad item."""
    out: list[Layout] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        workers, sep, slots = item.lower().partition("x")
        if not sep or not workers.isdigit() or not slots.isdigit():
            raise ValueError(f"layout {item!r} is not WORKERSxSLOTS (e.g. 2x4)")
        layout = Layout(int(workers), int(slots))
        if layout.workers < 1 or layout.slots < 1:
            raise ValueError(f"layout {item!r} needs at least 1 worker and 1 slot")
        if layout in out:
            raise ValueError(f"layout {item!r} is given twice")
        out.append(layout)
    if not out:
        raise ValueError("no layout given (e.g. 2x1,2x4,4x2)")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of our own on a free loopback port, without persistence."""

    def __init__(self, logdir: Path, *extra: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=logdir)
        self.port = free_port()
        self.extra = extra  # more redis-server options (--replicaof HOST PORT)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--maxclients", "4000", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} did not start"
                                       ) from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def command_breakdown(client: redis.Redis) -> dict[str, int]:
    """Calls per command the server has run, those called from Lua scripts included."""
    stats = client.info("commandstats")
    return {k[len("cmdstat_"):]: int(v["calls"]) for k, v in stats.items()
            if k.startswith("cmdstat_")}


def commands_since(client: redis.Redis, before: dict[str, int]) -> dict[str, int]:
    """Calls per command since ``before`` (a ``command_breakdown``), our INFO excluded."""
    after = command_breakdown(client)
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    delta["info"] = delta.get("info", 0) - 1
    return {k: v for k, v in delta.items() if v}


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the server has used (INFO cpu: ``used_cpu_sys + used_cpu_user``)."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def top(counts: dict[str, int], per: float, n: int = 12) -> dict[str, float]:
    return {k: v / per for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:n]}


@dataclass
class Started:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Launcher:
    """Starts commands with a log file each, in sessions of their own; stops them all."""

    logdir: Path
    env: dict[str, str]
    started: list[Started] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], extra: dict[str, str] | None = None,
              cpu: int | None = None) -> subprocess.Popen[bytes]:
        env = {**self.env, **(extra or {})}
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        log = self.logdir / f"{name}-{next(_SEQUENCE)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(list(argv), cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(Started(name, proc, log))
        return proc

    def check_alive(self) -> None:
        for s in self.started:
            if s.proc.poll() is not None:
                tail = s.log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"{s.name} (pid {s.proc.pid}) exited with"
                                   f" {s.proc.returncode}:\n" + "\n".join(tail))

    def stop_all(self) -> None:
        """SIGTERM each, wait, then SIGKILL its process group (its pool children)."""
        for s in reversed(self.started):
            if s.proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(s.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for s in reversed(self.started):
            with suppress(subprocess.TimeoutExpired):
                s.proc.wait(max(0.1, deadline - time.monotonic()))
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(s.proc.pid, signal.SIGKILL)  # a session we created: only ours
            with suppress(subprocess.TimeoutExpired):
                s.proc.wait(5)
        self.started.clear()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


class System:
    """An adapter: subclasses define ``commands`` and ``submit``."""

    name = "?"
    has_priority = False
    has_aging = False

    def __init__(self, logdir: Path, record_url: str) -> None:
        self.logdir = logdir
        self.record_url = record_url
        self.broker_url = ""
        self.launcher: Launcher | None = None
        self.worker_pids: list[int] = []  # one per worker command started for the layout

    # -- to override --------------------------------------------------------------

    def commands(self, layout: Layout) -> list[tuple[list[str], dict[str, str], int]]:
        """(argv, extra env, host index) per worker command to start for ``layout``."""
        raise NotImplementedError

    def submit(self, jobs: Sequence[Job]) -> None:
        """Enqueue ``jobs`` the way the system's users would, in this order."""
        raise NotImplementedError

    def connect(self, layout: Layout) -> None:
        """Open the client side for ``self.broker_url`` (called before the workers start)."""

    def before_workers(self, launcher: Launcher, layout: Layout) -> None:
        """Start anything the workers need first (our dispatcher)."""

    def disconnect(self) -> None:
        """Close the client side."""

    def dispatcher_pids(self) -> list[int]:
        """Processes besides the workers that serve tasks (our dispatcher); none for a
        system whose workers take tasks straight from the broker."""
        return []

    # -- shared ---------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "BENCH_"))}
        env.update(PYTHONPATH=str(ROOT), BENCH_RECORD_URL=self.record_url,
                   BENCH_BROKER_URL=self.broker_url, PYTHONUNBUFFERED="1")
        return env

    def start(self, layout: Layout, broker_url: str) -> list[int]:
        """Start the workers for ``layout``; returns the worker indices tasks will record."""
        self.broker_url = broker_url
        self.connect(layout)
        self.launcher = Launcher(self.logdir, self.base_env())
        self.before_workers(self.launcher, layout)
        cores = len(os.sched_getaffinity(0))
        indices: list[int] = []
        self.worker_pids = []
        for index, (argv, extra, host) in enumerate(self.commands(layout)):
            cpu = sorted(os.sched_getaffinity(0))[host % cores] if layout.pin else None
            proc = self.launcher.spawn(f"{self.name}-w{index}", argv,
                                       {**extra, "BENCH_WORKER_INDEX": str(index),
                                        "BENCH_SLOTS": str(layout.slots)}, cpu=cpu)
            self.worker_pids.append(proc.pid)
            indices.append(index)
        return indices

    def stop(self) -> None:
        try:
            if self.launcher is not None:
                self.launcher.stop_all()
        finally:
            self.launcher = None
            self.worker_pids = []
            self.disconnect()
