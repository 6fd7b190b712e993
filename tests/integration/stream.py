"""A steady stream of small flows through a cluster while a test breaks its Redis, and what
became of each: completed, lost with a clear FlowLost, or refused at submit (never a hang:
every wait is bounded)."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import redis
from balancer.common.connection import connect
from balancer.common.keys import Keys

from balancer import Flow, FlowLost, FlowRun, NotReplicated
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks

# Between two submits of the stream.
PACE = 0.05


@dataclass
class Outcome:
    completed: int = 0
    lost: list[str] = field(default_factory=list)  # flow ids FlowLost named
    other: list[str] = field(default_factory=list)  # anything else: the test fails on it
    refused: list[str] = field(default_factory=list)  # submits that raised: not accepted
    unconfirmed: list[str] = field(default_factory=list)  # NotReplicated: written, unsure


class Stream:
    """Submits a flow of three tasks (two constants into an add) every PACE seconds."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.runs: list[tuple[float, FlowRun, int]] = []  # (submitted at, run, expected)
        self.outcome = Outcome()
        self.odd: list[FlowRun] = []  # the runs behind outcome.other
        self.stopping = threading.Event()
        self.failed_over_at = 0.0  # when the new master served (monotonic), once it did
        self.thread = threading.Thread(target=self._submit, daemon=True)

    def start(self) -> Stream:
        self.thread.start()
        return self

    def _submit(self) -> None:
        i = 0
        while not self.stopping.is_set():
            i += 1
            with Flow(f"stream-{i}") as flow:
                tasks.add(tasks.constant(i), tasks.constant(1))
            try:
                run = flow.submit(self.client, namespace=self.namespace)
            except NotReplicated as exc:
                self.outcome.unconfirmed.append(str(exc))
            except (redis.RedisError, OSError) as exc:
                self.outcome.refused.append(f"{type(exc).__name__}: {exc}")
            else:
                self.runs.append((time.monotonic(), run, i + 1))
            self.stopping.wait(PACE)

    def accepted_since(self, when: float) -> int:
        return sum(1 for at, _, _ in self.runs if at >= when)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)

    def settle(self, timeout: float = 60.0) -> Outcome:
        """Wait for every accepted run, within ``timeout`` seconds for all of them (a few
        waits at once: a lost run's wait takes a slice of run.WAIT_SLICE to say so)."""
        deadline = time.monotonic() + timeout

        def settle_one(run: FlowRun) -> str | BaseException:
            try:
                return run.wait(timeout=max(0.5, deadline - time.monotonic()))
            except (FlowLost, TimeoutError) as exc:
                return exc

        with ThreadPoolExecutor(max_workers=16) as pool:
            settled = list(pool.map(settle_one, [run for _, run, _ in self.runs]))
        for (_, run, expected), state in zip(self.runs, settled, strict=True):
            if isinstance(state, FlowLost):
                self.outcome.lost.append(run.id)
            elif isinstance(state, BaseException):
                self.outcome.other.append(f"{run.id}: {state}")
                self.odd.append(run)
            elif state == "completed" and run.results().get("add") == expected:
                self.outcome.completed += 1
            else:
                self.outcome.other.append(f"{run.id}: {state} {run.states()} {run.message}")
                self.odd.append(run)
        return self.outcome


def dispatch_gap(client: redis.Redis, namespace: str, runs: list[FlowRun]) -> float:
    """The longest time, in seconds, between two task completions of the runs (Redis's
    own clock, as each task's ``finished`` field records it; each run read in its own
    partition)."""
    pipe = client.pipeline(transaction=False)
    for run in runs:
        for task_id in run.ids.values():
            pipe.hget(run.keys.task(task_id), "finished")
    times = sorted(int(t) for t in pipe.execute() if t is not None)
    return max((b - a for a, b in itertools.pairwise(times)), default=0) / 1000


def run_through_failover(procs: Processes, url: str, namespace: str,
                         kill: Callable[[], None], failed_over: Callable[[], bool],
                         monkeypatch: pytest.MonkeyPatch, what: str,
                         until: Callable[[], bool] | None = None, **env: str
                         ) -> tuple[Stream, float]:
    """serve and two workers (a thread pool, a process pool) on ``url``, a stream of flows,
    ``kill`` mid-stream, until ``failed_over``, then the stream carries on; every run
    settled (bounded waits) and the processes stopped cleanly: (the stream, the dispatch
    gap in seconds). With ``until``, the stream carries on until it holds too (within
    60 s). ``env`` goes to every process, this one's submits included."""
    procs.env.update(BALANCER_REDIS_URL=url, BALANCER_WORKER_TIMEOUT="5.0", **env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = connect(url)
    keys = Keys(namespace)
    serve = procs.serve()
    workers = [procs.worker("--concurrency", "2", "--pool", pool, "--name", pool)
               for pool in ("thread", "process")]
    wait_for(lambda: client.zcard(keys.workers) >= 2, timeout=30)
    stream = Stream(client, namespace).start()
    time.sleep(2)
    killed_at = time.monotonic()
    kill()
    wait_for(failed_over, timeout=30, interval=0.05)
    stream.failed_over_at = time.monotonic()
    failover = stream.failed_over_at - killed_at
    # The cluster carries on: flows submitted after the failover complete.
    wait_for(lambda: stream.accepted_since(killed_at) >= 20, timeout=30, interval=0.1)
    if until is not None:
        wait_for(until, timeout=60, interval=0.1)
    time.sleep(1)
    stream.stop()
    outcome = stream.settle(timeout=60)
    gap = dispatch_gap(client, namespace, [run for _, run, _ in stream.runs])
    print(f"\n{what}: accepted={len(stream.runs)} completed={outcome.completed}"
          f" lost={len(outcome.lost)} refused={len(outcome.refused)}"
          f" unconfirmed={len(outcome.unconfirmed)} failover={failover:.2f}s"
          f" dispatch gap={gap:.2f}s"
          + (f"; a refused submit: {outcome.refused[0]}" if outcome.refused else ""))
    if stream.odd:  # what each process said of those runs' tasks, for the failure
        ids = {task_id for run in stream.odd for task_id in run.ids.values()}
        for proc in (serve, *workers):
            said = [line for line in procs.log(proc).splitlines()
                    if any(task_id in line for task_id in ids)]
            print(f"{proc.args}:", *said, sep="\n  ")
    assert serve.poll() is None and all(w.poll() is None for w in workers)
    # An operator's view through the same URL, after the failover.
    status = subprocess.run([sys.executable, "-m", "balancer.cli", "status", "--json"],
                            cwd=ROOT, env=procs.env, capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["leader"] and {w["id"] for w in view["workers"]} == {"thread", "process"}
    for proc in (serve, *workers):
        assert procs.stop(proc, signal.SIGTERM) == 0, procs.log(proc)
        assert "Traceback" not in procs.log(proc), procs.log(proc)
        assert "CROSSSLOT" not in procs.log(proc), procs.log(proc)
    return stream, gap
