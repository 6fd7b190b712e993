"""The chaos driver: layered flows run on a fleet of workers while workers and the
dispatcher are killed with SIGKILL at random moments; then every result is checked and
every duplicate execution explained by a kill.

Shared by the chaos test (tests/integration/test_chaos.py) and the recovery benchmark
(bench/recovery_bench.py). It imports nothing of pytest: it starts processes through a
``Starter`` its caller provides (the test's ``procs`` fixture, or the benchmark's own
launcher), and its tasks live in ``bench.chaos.tasks``, where workers import them.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
import redis
from balancer.common import codec
from balancer.common.keys import Keys

from balancer import Flow, FlowRun, Node
from bench.chaos.tasks import MODULUS, combine, executions_key, step
from bench.reap import wait_ended


class Starter(Protocol):
    """Starts the cluster's processes; the driver kills them. Each Popen may carry a
    ``log_path`` attribute naming the file its output goes to."""

    def serve(self) -> subprocess.Popen[bytes]: ...

    def worker(self, name: str, pool: str, concurrency: int) -> subprocess.Popen[bytes]: ...


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    flows: int = 6
    layers: int = 10
    width: int = 30
    worker_kills: int = 6
    dispatcher_kills: int = 2
    both_kills: int = 1  # the dispatcher and a worker at once
    # The fleet: (pool, concurrency) of each worker; a killed worker is replaced in kind.
    fleet: tuple[tuple[str, int], ...] = (("process", 2), ("thread", 3), ("process", 2))
    gap: tuple[float, float] = (1.0, 2.5)  # seconds between chaos events
    dispatcher_down: tuple[float, float] = (0.2, 1.5)  # seconds before a restart
    long_share: float = 0.1  # tasks that sleep 0.2-0.6 s (the rest 5-50 ms)
    deadline: float = 110.0  # seconds for the whole run, chaos included

    @property
    def tasks(self) -> int:
        return self.flows * (self.layers * self.width + 1)


@dataclass
class PlannedFlow:
    flow: Flow
    labels: dict[Node, str]
    expected: dict[Node, int]
    run: FlowRun | None = None


@dataclass
class Kill:
    index: int
    at: float  # seconds since the run started
    kind: str  # "worker" or "dispatcher"
    victim: str
    pool: str = ""
    leased: frozenset[str] = frozenset()  # task ids leased to the worker when it died
    # ... of which it had taken out of its inbox: running, or about to run. Only these can
    # have been executed by it, so only these may run twice.
    taken: frozenset[str] = frozenset()
    reexecuted: int = 0  # its runs of tasks that then ran again elsewhere: duplicates
    checked: bool = False  # reexecuted is known (set by the checks after the run)

    def describe(self) -> str:
        if self.kind == "dispatcher":
            return f"kill {self.index:2d} at {self.at:6.1f}s: dispatcher"
        line = (f"kill {self.index:2d} at {self.at:6.1f}s: worker {self.victim} ({self.pool}):"
                f" leased {len(self.leased)}, taken from its inbox {len(self.taken)}")
        return line + (f", duplicated {self.reexecuted}" if self.checked else "")


@dataclass
class Report:
    seed: int
    tasks: int = 0
    flows: int = 0
    executions: int = 0
    duplicates: int = 0
    duplicated_tasks: int = 0
    kills: list[Kill] = field(default_factory=list)
    skipped_events: int = 0
    seconds: float = 0.0
    log_counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def worker_kills(self) -> list[Kill]:
        return [k for k in self.kills if k.kind == "worker"]

    @property
    def dispatcher_kills(self) -> int:
        return sum(1 for k in self.kills if k.kind == "dispatcher")

    @property
    def taken_at_kills(self) -> int:
        return sum(len(k.taken) for k in self.worker_kills)

    @property
    def leased_at_kills(self) -> int:
        return sum(len(k.leased) for k in self.worker_kills)

    def figures(self) -> dict[str, Any]:
        kills = len(self.worker_kills)
        return {
            "seed": self.seed, "tasks": self.tasks, "flows": self.flows,
            "executions": self.executions, "duplicates": self.duplicates,
            "duplicated_tasks": self.duplicated_tasks, "worker_kills": kills,
            "dispatcher_kills": self.dispatcher_kills,
            "leased_on_killed_workers": self.leased_at_kills,
            "taken_on_killed_workers": self.taken_at_kills,
            "duplicates_per_worker_kill": round(self.duplicates / kills, 2) if kills else None,
            "duplicates_per_kill": [k.reexecuted for k in self.worker_kills],
            "skipped_events": self.skipped_events, "seconds": round(self.seconds, 1),
            **self.log_counts, "problems": len(self.problems),
        }

    def lines(self) -> list[str]:
        f = self.figures()
        out = [
            f"chaos seed={self.seed}: {self.tasks} tasks in {self.flows} flows,"
            f" {self.executions} executions, {self.duplicates} duplicates"
            f" ({self.duplicated_tasks} tasks ran more than once) in {self.seconds:.1f}s",
            f"  kills: {len(self.worker_kills)} workers, {self.dispatcher_kills} dispatchers"
            f" ({self.skipped_events} events skipped: work had finished);"
            f" tasks on killed workers: {self.leased_at_kills} leased,"
            f" {self.taken_at_kills} taken from the inbox; duplicates per worker kill:"
            f" {f['duplicates_per_worker_kill']}",
            "  logs: " + ", ".join(f"{k}={v}" for k, v in self.log_counts.items()),
        ]
        out += ["  " + k.describe() for k in self.kills]
        if len(self.problems) > 20:
            out.append(f"  {len(self.problems)} problems, the first 20 shown")
        out += [f"  PROBLEM: {p}" for p in self.problems[:20]]
        return out


# Log lines that tell how the cluster coped; counted over every process's log.
LOG_MARKERS = {
    "refused_acks": "outcome refused",
    "false_deaths": "had been declared dead",
    "lost_track": "it had lost track of",
    "reaped": "reaped (missed heartbeats)",
    "tracebacks": "Traceback (most recent call last)",
}


def plan_flows(config: ChaosConfig, rng: random.Random, log: list[str]) -> list[PlannedFlow]:
    """Layered DAGs: each step takes the results of 1-3 steps of the layer before; a
    last step per flow combines the whole last layer. Expected values are computed here."""
    planned = []
    for f in range(config.flows):
        labels: dict[Node, str] = {}
        expected: dict[Node, int] = {}
        with Flow(f"chaos-{f}") as flow:
            previous: list[Node] = []
            for layer in range(config.layers):
                current = []
                for i in range(config.width):
                    parents = (rng.sample(previous, rng.randint(1, min(3, len(previous))))
                               if previous else [])
                    salt = rng.randrange(MODULUS)
                    pause = (rng.uniform(0.2, 0.6) if rng.random() < config.long_share
                             else rng.uniform(0.005, 0.05))
                    label = f"{f}/{layer}/{i}"
                    node = step(log, label, salt, parents, round(pause, 3))
                    labels[node] = label
                    expected[node] = combine(salt, [expected[p] for p in parents])
                    current.append(node)
                previous = current
            salt = rng.randrange(MODULUS)
            sink = step(log, f"{f}/sink", salt, previous, 0.0)
            labels[sink] = f"{f}/sink"
            expected[sink] = combine(salt, [expected[p] for p in previous])
        planned.append(PlannedFlow(flow, labels, expected))
    return planned


def _log_text(proc: subprocess.Popen[bytes]) -> str:
    path = getattr(proc, "log_path", None)
    if not path:
        return ""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _kill_tree(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """SIGKILL a process, then its children (a process pool's), as a crashed node would.

    Returns once the process is gone; its orphaned children may take a moment longer to
    be reaped, so they are returned for the caller to wait on when it has time.
    """
    kids: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        kids = list(psutil.Process(proc.pid).children(recursive=True))
    proc.send_signal(signal.SIGKILL)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            kid.send_signal(signal.SIGKILL)
    proc.wait(10)
    return kids


@dataclass
class _Live:
    proc: subprocess.Popen[bytes]
    pool: str
    concurrency: int


class ChaosDriver:
    """Runs layered flows on a fleet of workers while killing workers and the dispatcher
    with SIGKILL, then checks every result and explains every duplicate execution."""

    def __init__(self, client: redis.Redis, namespace: str, redis_url: str, starter: Starter,
                 config: ChaosConfig, say: Callable[[str], None] = lambda _: None) -> None:
        self.client = client
        self.namespace = namespace
        self.keys = Keys(namespace)
        self.starter = starter
        self.config = config
        self.say = say
        self.rng = random.Random(config.seed)
        self.exec_key = executions_key(namespace)
        self.planned = plan_flows(config, self.rng, [redis_url, self.exec_key])
        self.live: dict[str, _Live] = {}
        self.started: dict[str, subprocess.Popen[bytes]] = {}
        self.dispatchers: list[subprocess.Popen[bytes]] = []
        self.kills: list[Kill] = []
        self.snapshot_problems: list[str] = []
        self.skipped = 0
        self._t0 = time.monotonic()
        self._serial = 0

    # -- processes -------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0

    def _start_dispatcher(self) -> None:
        self.dispatchers.append(self.starter.serve())

    def _start_worker(self, pool: str, concurrency: int) -> str:
        name = f"chaos-w{self._serial}"
        self._serial += 1
        proc = self.starter.worker(name, pool, concurrency)
        self.live[name] = _Live(proc, pool, concurrency)
        self.started[name] = proc
        return name

    def start(self, timeout: float = 60.0) -> None:
        self._t0 = time.monotonic()
        self._start_dispatcher()
        for pool, concurrency in self.config.fleet:
            self._start_worker(pool, concurrency)
        deadline = time.monotonic() + timeout
        while self.client.zcard(self.keys.workers) < len(self.config.fleet):
            if time.monotonic() > deadline:
                raise RuntimeError("the chaos fleet did not register in time")
            time.sleep(0.05)

    def _kill_worker(self) -> None:
        name = self.rng.choice(sorted(self.live))
        live = self.live.pop(name)
        # A replacement may still be starting (a process pool takes a few seconds to
        # start on a busy host): killed before it registered, it held nothing.
        starting = self.client.zscore(self.keys.workers, name) is None
        at = self._elapsed()
        kids = _kill_tree(live.proc)
        # The dead worker's leases and inbox stay in Redis until the dispatcher reaps it
        # (a worker timeout later), so read at once this is exactly what it held when it
        # died. Lease members and inbox entries both start with "<task id>|".
        pipe = self.client.pipeline(transaction=True)
        pipe.zscore(self.keys.workers, name)
        pipe.smembers(self.keys.leases(name))
        pipe.lrange(self.keys.inbox(name), 0, -1)
        registered, members, inbox = pipe.execute()
        late = self._elapsed() - at
        leased = frozenset(m.decode().split("|", 1)[0] for m in members)
        waiting = {e.split(b"|", 1)[0].decode(errors="replace") for e in inbox}
        kill = Kill(len(self.kills) + 1, at, "worker", name, live.pool, leased,
                    leased - waiting)
        if registered is None and not starting:
            self.snapshot_problems.append(f"worker {name} was reaped before its leases were"
                                          f" read ({late:.2f}s after the kill)")
        self.kills.append(kill)
        self.say(kill.describe() + (" (killed while it started)" if starting else ""))
        self._start_worker(live.pool, live.concurrency)
        wait_ended(kids, timeout=2)

    def _kill_dispatcher(self) -> None:
        at = self._elapsed()
        for proc in self.dispatchers:
            if proc.poll() is None:
                _kill_tree(proc)
        kill = Kill(len(self.kills) + 1, at, "dispatcher", "serve")
        self.kills.append(kill)
        self.say(kill.describe())

    def _event(self, kind: str) -> None:
        if kind == "worker":
            self._kill_worker()
        elif kind == "dispatcher":
            self._kill_dispatcher()
            time.sleep(self.rng.uniform(*self.config.dispatcher_down))
            self._start_dispatcher()
        else:  # both: a worker dies, and no dispatcher is there to reap it
            self._kill_worker()
            self._kill_dispatcher()
            time.sleep(self.rng.uniform(*self.config.dispatcher_down))
            self._start_dispatcher()

    # -- the run ---------------------------------------------------------------------

    def _submit(self, planned: PlannedFlow) -> None:
        planned.run = planned.flow.submit(self.client, namespace=self.namespace)

    def _all_finished(self) -> bool:
        if any(p.run is None for p in self.planned):
            return False
        return all(p.run is not None and p.run.is_finished() for p in self.planned)

    def _sleep_unless_finished(self, seconds: float) -> bool:
        """Sleep; True if every flow finished meanwhile."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._all_finished():
                return True
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        return self._all_finished()

    def run(self) -> Report:
        """Submit, make chaos while work remains, wait for every flow, and check."""
        c = self.config
        events = (["worker"] * c.worker_kills + ["dispatcher"] * c.dispatcher_kills
                  + ["both"] * c.both_kills)
        self.rng.shuffle(events)
        gaps = [self.rng.uniform(*c.gap) for _ in events]
        # Half the flows now, the others spread over the chaos (some arrive while no
        # dispatcher runs), so that work remains until the last events.
        first = max(1, (len(self.planned) + 1) // 2)
        for planned in self.planned[:first]:
            self._submit(planned)
        later = list(self.planned[first:])
        after_event = {int((k + 1) * len(events) / (len(later) + 1)): planned
                       for k, planned in enumerate(later)}
        for i, (kind, gap) in enumerate(zip(events, gaps)):
            if self._sleep_unless_finished(gap) and all(p.run for p in self.planned):
                self.skipped = len(events) - i
                break
            self._event(kind)
            if i + 1 in after_event:
                self._submit(after_event[i + 1])
        for planned in self.planned:
            if planned.run is None:
                self._submit(planned)
        report = Report(self.config.seed, tasks=c.tasks, flows=len(self.planned),
                        kills=self.kills, skipped_events=self.skipped,
                        problems=list(self.snapshot_problems))
        deadline = self._t0 + c.deadline
        for planned in self.planned:
            assert planned.run is not None
            try:
                planned.run.wait(timeout=max(1.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                report.problems.append(f"{exc}: {self._stuck(planned.run)}")
        report.seconds = self._elapsed()
        self.check(report)
        return report

    def _stuck(self, run: FlowRun) -> str:
        states: Counter[str] = Counter()
        sample: list[str] = []
        for task_id in run.ids.values():
            state, worker, attempt = self.client.hmget(self.keys.task(task_id),
                                                       ["state", "worker", "attempt"])
            s = state.decode() if state else "missing"
            states[s] += 1
            if s not in ("completed", "pending") and len(sample) < 5:
                sample.append(f"{task_id}:{s}@{worker.decode() if worker else '-'}"
                              f"#{attempt.decode() if attempt else '-'}")
        return f"task states {dict(states)}; e.g. {', '.join(sample)}"

    # -- the checks ------------------------------------------------------------------

    def check(self, report: Report) -> None:
        """Every flow completed with every result right, every duplicate explained, and
        nothing left behind in Redis."""
        accepted: dict[str, tuple[str, str]] = {}  # label -> (task id, completing worker)
        for planned in self.planned:
            run = planned.run
            assert run is not None
            if run.state != "completed":
                report.problems.append(f"flow {planned.flow.name} ({run.id}) ended {run.state}")
            nodes = list(planned.labels)
            pipe = self.client.pipeline(transaction=False)
            for node in nodes:
                pipe.hmget(self.keys.task(run.ids[node]), ["state", "result", "worker"])
            for node, (state, blob, worker) in zip(nodes, pipe.execute()):
                label, task_id = planned.labels[node], run.ids[node]
                accepted[label] = (task_id, worker.decode() if worker else "?")
                if state != b"completed":
                    report.problems.append(
                        f"task {label} ({task_id}) is {state.decode() if state else 'missing'}")
                    continue
                got = codec.unpack(blob)
                if got != planned.expected[node]:
                    report.problems.append(f"task {label} ({task_id}): result {got!r},"
                                           f" expected {planned.expected[node]}")
        self._check_executions(report, accepted)
        self._check_leftovers(report)
        report.log_counts = self._log_counts()

    def _check_executions(self, report: Report, accepted: dict[str, tuple[str, str]]) -> None:
        """A task may run more than once only where a worker died running it: every run
        but the one whose result was stored must be on a killed worker that had taken the
        task from its inbox when it died, and no worker may run a task twice."""
        problems = report.problems
        runs: dict[str, Counter[str]] = {label: Counter() for label in accepted}
        records = self.client.lrange(self.exec_key, 0, -1)
        report.executions = len(records)
        for raw in records:
            label, worker, _pid = raw.decode().split("|")
            if label not in runs:
                problems.append(f"an execution of unknown task {label} on {worker}")
                continue
            runs[label][worker] += 1
        killed = {k.victim: k for k in self.kills if k.kind == "worker"}
        for label, per_worker in sorted(runs.items()):
            task_id, winner = accepted[label]
            total = sum(per_worker.values())
            if total == 0:
                problems.append(f"task {label} ({task_id}) never ran")
                continue
            if per_worker[winner] != 1:
                problems.append(f"task {label} ({task_id}) completed on {winner}, which ran it"
                                f" {per_worker[winner]} times ({dict(per_worker)})")
            if total == 1:
                continue
            report.duplicated_tasks += 1
            report.duplicates += total - 1
            for worker, n in per_worker.items():
                if worker == winner:
                    continue
                kill = killed.get(worker)
                if n > 1:
                    problems.append(f"task {label} ({task_id}) ran {n} times on {worker}")
                if kill is None:
                    proc = self.started.get(worker)
                    refused = proc is not None and any(
                        f"task={task_id}" in line and "outcome refused" in line
                        for line in _log_text(proc).splitlines())
                    why = (f"; {worker} logged its ack as refused: it was presumed dead while"
                           " alive (missed heartbeats under load?)" if refused else "")
                    problems.append(f"task {label} ({task_id}) ran on live worker {worker} but"
                                    f" its result came from {winner}: a duplicate no kill"
                                    f" explains ({dict(per_worker)}){why}")
                elif task_id not in kill.taken:
                    problems.append(f"task {label} ({task_id}) ran on killed worker {worker},"
                                    f" which had not taken it from its inbox when it died"
                                    f" ({dict(per_worker)})")
                else:
                    kill.reexecuted += 1
        for kill in killed.values():
            kill.checked = True
        if report.duplicates > report.taken_at_kills:
            problems.append(f"{report.duplicates} duplicates but killed workers had taken only"
                            f" {report.taken_at_kills} tasks from their inboxes")

    def _check_leftovers(self, report: Report, timeout: float = 30.0) -> None:
        """Every killed worker reaped, nothing left queued, leased, delayed or counted."""
        problems = report.problems
        killed = [k.victim for k in self.kills if k.kind == "worker"]
        deadline = time.monotonic() + timeout
        while True:
            left = [w for w in killed
                    if self.client.exists(self.keys.leases(w), self.keys.inbox(w),
                                          self.keys.worker(w))
                    or self.client.zscore(self.keys.workers, w) is not None]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if left:
            problems.append(f"killed workers never reaped: {left}")
        for name in self.live:
            n = self.client.scard(self.keys.leases(name))
            if n:
                problems.append(f"live worker {name} still holds {n} leases after the run")
        if self.client.zcard(self.keys.queue("default")):
            problems.append("tasks are left in queue default")
        for key in (self.keys.delayed, self.keys.dlq, self.keys.deadlines):
            if self.client.zcard(key):
                problems.append(f"{key} is not empty")
        inflight = {k.decode(): int(v) for k, v in self.client.hgetall(self.keys.inflight).items()}
        if any(inflight.values()):
            problems.append(f"in-flight counters did not return to 0: {inflight}")

    def _log_counts(self) -> dict[str, int]:
        texts = [_log_text(p) for p in [*self.started.values(), *self.dispatchers]]
        return {name: sum(t.count(marker) for t in texts) for name, marker in LOG_MARKERS.items()}

    def stop(self) -> None:
        """Kill whatever the driver started and still runs (the starter cleans up too)."""
        for proc in [*self.started.values(), *self.dispatchers]:
            if proc.poll() is None:
                wait_ended(_kill_tree(proc), timeout=2)
