"""A --concurrency past what the host can hold (a typo: 100000 for 10) is refused at start,
naming the limit, and leaves no worker registered for the dispatcher to lease to. Real
`worker start` processes: the thread pool under an address-space limit that lets it
start only some of its threads, the process pool past this host's memory."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
import redis
from balancer.common.keys import Keys

from tests.conftest import ROOT, Processes

pytestmark = pytest.mark.integration


def _start(procs: Processes, *args: str, limit_bytes: int | None = None
           ) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, "-m", "balancer.worker.cli", "start", *args],
                          cwd=ROOT, env=procs.env, preexec_fn=limit, capture_output=True,
                          text=True, timeout=120)


def test_a_thread_pool_the_host_cannot_start_says_so_and_registers_nothing(
        procs: Processes, namespace: str, real: redis.Redis) -> None:
    # 1.5 GiB of address space: thread stacks of 8 MiB run out long before 2,000 slots.
    done = _start(procs, "--pool", "thread", "--concurrency", "2000",
                  limit_bytes=1536 * 2**20)
    assert done.returncode == 1, done.stderr
    assert "cannot start: this host let it start" in done.stderr, done.stderr
    assert "lower --concurrency" in done.stderr
    assert real.zcard(Keys(namespace).workers) == 0


def test_a_process_pool_past_the_hosts_memory_is_refused_before_anything_starts(
        procs: Processes, namespace: str, real: redis.Redis) -> None:
    done = _start(procs, "--pool", "process", "--concurrency", "100000")
    assert done.returncode == 1, done.stderr
    assert "--concurrency 100000 with the process pool starts 100000 processes" in done.stderr
    assert "start at most" in done.stderr
    assert real.zcard(Keys(namespace).workers) == 0
