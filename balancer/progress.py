"""What a blocking ``flow.run()`` tells its user while it waits.

A run that waits in silence looks the same whether it is busy or stuck: a flow whose
queue no worker serves used to hang for ever without a word. So, while it waits:

- on a terminal, one line redrawn in place: done/total, running, failed, the flow id;
- elsewhere (a log file, CI), a plain line when the counts change, at most every few
  seconds;
- after a few seconds without progress, what holds the run (``FlowRun.why``), with the
  command that would unblock it, once for each new answer;
- at the end, a one-line summary with the first failed task and its error.

``Reporter`` only formats and decides when to speak; ``read`` is the one Redis read (the
flow's counts, and for flows small enough the tasks' states, in one round trip).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from balancer.common.models import FlowState, TaskState

if TYPE_CHECKING:
    from balancer.run import FlowRun

# The running count costs a read of every task's state: only for flows up to this size.
RUNNING_READ_LIMIT = 2000
TICK = 0.25  # seconds between looks on a terminal
LINE_EVERY = 5.0  # least seconds between two plain lines
STUCK_AFTER = 5.0  # seconds without progress before the run says what holds it
RESAY_AFTER = 30.0  # a hold unchanged is said again after this long
BAR = 24
# Reasons that are no hold: the task is on its way, or waits for one that is.
_MOVING = ("running on worker", "waiting for", "leased to a worker", "next in line",
           "tasks ahead of it")


@dataclass(frozen=True)
class Snapshot:
    total: int
    done: int
    failed: int
    running: int | None  # None: not read (a large flow)

    def progress(self) -> tuple[int, int]:
        return self.done, self.failed


def read(run: FlowRun) -> Snapshot:
    """The run's counts in one round trip."""
    pipe = run.client.pipeline(transaction=False)
    pipe.hmget(run.keys.flow(run.id), ["total", "remaining", "failed"])
    small = len(run.ids) <= RUNNING_READ_LIMIT
    if small:
        for task_id in run.ids.values():
            pipe.hget(run.keys.task(task_id), "state")
    (total, remaining, failed), *states = pipe.execute()
    n = int(total or len(run.ids))
    running = sum(s == TaskState.RUNNING.encode() for s in states) if small else None
    return Snapshot(n, n - int(remaining if remaining is not None else n), int(failed or 0),
                    running)


def holds(why: dict[str, str]) -> list[str]:
    """What holds a run, from ``FlowRun.why``: each distinct hold with how many tasks it
    holds, most first; tasks on their way are no hold."""
    counts = Counter(text for text in why.values() if not any(m in text for m in _MOVING))
    return [f"{n} task{'s' if n != 1 else ''}: {text}" for text, n in counts.most_common()]


class Reporter:
    """Speaks for one waiting run. ``mode``: bar (redrawn in place), lines, or off."""

    def __init__(self, run: FlowRun, stream: TextIO, mode: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run = run
        self.stream = stream
        self.mode = mode
        self.clock = clock
        self.started = clock()
        self.last: Snapshot | None = None
        self.moved_at = self.started  # when done/failed last changed
        self.said_at = self.started  # when a plain line was last written: a run shorter
        # than LINE_EVERY says only that it was submitted and how it ended
        self.held: tuple[list[str], float] | None = None  # the hold said, and when
        self.drawn = False  # a bar is on the current line
        self.looked_at = -TICK  # when Redis was last read

    @classmethod
    def for_run(cls, run: FlowRun, stream: TextIO, setting: str, quiet: bool) -> Reporter:
        """``setting`` is BALANCER_PROGRESS: auto picks a bar on a terminal, lines
        elsewhere."""
        mode = "off" if quiet else setting
        if mode == "auto":
            mode = "bar" if stream.isatty() else "lines"
        return cls(run, stream, mode)

    @property
    def tick(self) -> float | None:
        """How often the waiting loop should call ``update``; None: never."""
        return None if self.mode == "off" else TICK if self.mode == "bar" else 1.0

    def _name(self) -> str:
        return f"flow {self.run.name} ({self.run.id})"

    def begin(self) -> None:
        if self.mode == "lines":
            n = len(self.run.ids)
            self._line(f"{self._name()}: submitted, {n} task{'s' if n != 1 else ''}")

    def update(self) -> None:
        now = self.clock()
        if now - self.looked_at < (self.tick or 0.0):
            return  # a wait that returns early (the embedded broker) must not spin on reads
        self.looked_at = now
        snap = read(self.run)
        if self.last is None or snap.progress() != self.last.progress():
            self.moved_at = now
        changed = snap != self.last
        self.last = snap
        if self.mode == "bar":
            self._draw(snap, now)
        elif changed and now - self.said_at >= LINE_EVERY:
            self._line(f"{self._name()}: {self._counts(snap)}")
            self.said_at = now
        if now - self.moved_at >= STUCK_AFTER:
            self._say_holds(now)

    def _counts(self, snap: Snapshot, running: bool = True) -> str:
        parts = [f"{snap.done}/{snap.total} done"]
        if running and snap.running is not None:
            parts.append(f"{snap.running} running")
        if snap.failed:
            parts.append(f"{snap.failed} failed")
        return ", ".join(parts)

    def _draw(self, snap: Snapshot, now: float) -> None:
        filled = BAR * snap.done // max(snap.total, 1)
        bar = "#" * filled + "-" * (BAR - filled)
        self.stream.write(f"\r{self._name()} [{bar}] {self._counts(snap)}"
                          f" {now - self.started:.1f}s\x1b[K")
        self.stream.flush()
        self.drawn = True

    def _say_holds(self, now: float) -> None:
        found = holds(self.run.why())
        if not found:
            return
        if self.held is not None and self.held[0] == found and now - self.held[1] < RESAY_AFTER:
            return
        self.held = (found, now)
        waited = now - self.moved_at
        self._line(f"{self._name()}: no progress for {waited:.0f}s; held by: "
                   + "; ".join(found))

    def _line(self, text: str) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self, state: str) -> None:
        """The summary: how many tasks, how long, and the first failure."""
        if self.mode == "off":
            return
        snap = read(self.run)
        if self.mode == "bar":
            self._draw(snap, self.clock())
        took = self.clock() - self.started
        summary = f"{self._name()} {state}: {self._counts(snap, running=False)} in {took:.1f}s"
        if state == FlowState.FAILED:
            summary += self._first_failure()
        self._line(summary)

    def _first_failure(self) -> str:
        found = self.run.first_failure()
        if found is None:
            return ""
        name, error = found
        return f"; first failed: {name}: {error}" if error else f"; first failed: {name}"

    def interrupted(self) -> None:
        """Ctrl-C: say where the run is left and how to find it."""
        if type(self.run.client).__module__.startswith("fakeredis"):
            where = "stops with this process (it ran on the embedded cluster)"
        else:
            where = (f"goes on in the cluster; `balancer flow {self.run.id}` shows it,"
                     f" `balancer flow cancel {self.run.id}` cancels it")
        self._line(f"interrupted: {self._name()} {where}")
