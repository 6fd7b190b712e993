"""Shared fixtures: a real Redis (required in CI), a namespace per test, fakeredis for unit
tests, and a process manager that cleans up every process a test starts."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import psutil
import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.memoryserver import new_server
from balancer.common.settings import Settings

from bench.reap import wait_ended
from bench.redis_servers import RedisServer, answers

ROOT = Path(__file__).resolve().parent.parent
# The machine's Redis; TEST_REDIS_URL points the suite elsewhere (an unreachable URL
# shows what happens on a machine without one).
SHARED_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared Redis at 127.0.0.1:6379; elsewhere a private redis-server, else a skip.

    In CI (CI=true) a missing Redis fails the run: integration tests never skip silently.
    """
    if answers(SHARED_URL):
        yield SHARED_URL
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but no Redis answers at {SHARED_URL} (.ci/run must start it)")
    if shutil.which("redis-server") is None:
        pytest.skip("no Redis at 127.0.0.1:6379 and no redis-server on PATH to start one")
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def drop_namespace(client: redis.Redis, namespace: str) -> None:
    """Every key of the namespace: its partition 0, ``{ns}``, and any other, ``{ns:p}``;
    and the test's own keys named after it, ``ns:...``."""
    keys = [k for pattern in (Keys(namespace).prefix, "{" + namespace + ":", namespace + ":")
            for k in client.scan_iter(match=pattern + "*", count=1000)]
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])


@pytest.fixture
def real(redis_url: str, namespace: str) -> Iterator[redis.Redis]:
    """A client of the real Redis; the test's namespace is deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    yield client
    drop_namespace(client, namespace)
    client.close()


@pytest.fixture
def fake() -> redis.Redis:
    """A client of a fresh in-process server, the embedded cluster's kind (its BLMOVE
    blocks: an idle worker on it waits, as on a real Redis)."""
    return fakeredis.FakeRedis(server=new_server())


@pytest.fixture
def no_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graphviz package cannot be imported (flow.visualize() then draws text), whether
    or not this machine has it."""
    import builtins

    real_import = builtins.__import__

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "graphviz":
            raise ImportError("no graphviz here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)


@pytest.fixture
def settings(namespace: str) -> Settings:
    return Settings(namespace=namespace, heartbeat_interval=0.2, worker_timeout=2.0,
                    dispatch_tick=0.1, leader_ttl=2.0, shutdown_grace=5.0)


class Processes:
    """Starts `balancer` and `worker` commands as real processes; stops them all after."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, name: str = "proc") -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def serve(self, *args: str) -> subprocess.Popen[bytes]:
        return self.start("balancer.cli", "serve", *args, name="serve")

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        return self.start("balancer.worker.cli", "start", *args, name="worker")

    def serve_and_worker(self, client: redis.Redis, namespace: str, *worker_args: str
                         ) -> None:
        """``balancer serve`` and one worker, once the worker has registered."""
        self.serve()
        self.worker(*worker_args)
        wait_for(lambda: client.zcard(Keys(namespace).workers) >= 1, timeout=30)

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
             timeout: float = 15) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def cleanup(self) -> None:
        """Kill what still runs, and wait for its pool processes too: a forked pool child
        outlives its killed supervisor by a moment (until its forkserver ends), in which
        it ends its fetch with sentinels, which would land after the namespace is
        dropped and leave an inbox key behind."""
        for proc in self.procs:
            if proc.poll() is None:
                below: list[psutil.Process] = []
                with contextlib.suppress(psutil.NoSuchProcess):
                    below = psutil.Process(proc.pid).children(recursive=True)
                proc.kill()
                proc.wait(5)
                wait_ended(below, timeout=5)


@pytest.fixture
def procs(redis_url: str, namespace: str, tmp_path: Path, real: redis.Redis
          ) -> Iterator[Processes]:
    """Depends on ``real`` so that its processes stop before the namespace is dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env.update(BALANCER_REDIS_URL=redis_url, BALANCER_NAMESPACE=namespace,
               BALANCER_HEARTBEAT_INTERVAL="0.2", BALANCER_WORKER_TIMEOUT="2.0",
               BALANCER_DISPATCH_TICK="0.1", BALANCER_SHUTDOWN_GRACE="5",
               PYTHONPATH=str(ROOT))
    manager = Processes(env, tmp_path)
    yield manager
    manager.cleanup()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is truthy; return its value or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
