"""The supervisor's side of one pool child: start it, watch it, settle what it held.

The child runs its tasks on its own (``worker.child``). This thread sleeps while the child
is idle, and looks at the child's record while it runs: at the long-run horizon (the run
is shown as running, and the worker makes way for it), at the task's timeout (the child
is killed and the task failed), and at the child's death (its task fails as a crash, or
goes back to its queue if it had not started). A busy child with short tasks wakes this
thread once per horizon, not once per task, and so does a child given one task at a time
(``Awake``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

import redis
from balancer.common import codec, prefetch
from balancer.common.codec import CodecError, ErrorInfo
from balancer.common.replies import UnexpectedReply, as_opt_bytes_list, field_int
from balancer.common.retry import persist
from balancer.common.scripts import LeasedTask, Scripts
from balancer.common.settings import POOL_IMPORTS_ENV
from balancer.common.signals import Lease
from balancer.worker import askretry, child, statehooks, zygote
from balancer.worker.ack import Acker, Finished
from balancer.worker.child import ChildSpec
from balancer.worker.holding import Holding
from balancer.worker.outcome import Outcome
from balancer.worker.record import FINISHING, IDLE, PHASES, RUNNING, TAKEN, Record, Snapshot

if TYPE_CHECKING:  # ForkServerContext does not exist on Windows
    from multiprocessing.context import ForkServerContext, SpawnContext

log = logging.getLogger("worker")

PRELOAD = "balancer.worker.preload"  # what a pool's forkserver imports before it forks

# While the child is idle this thread sleeps until the child tells it of a lease, and at
# most this long (a note lost to a race costs at most this delay).
IDLE_WAIT = 1.0
# A child that dies this soon after it started is restarted after RESTART_BACKOFF.
EARLY_DEATH_S = 2.0
RESTART_BACKOFF = 1.0
# A long run already shown is looked at this often (its end is told by the child).
SHOWN_LOOK = 1.0
# A run's state handlers are told to at most this many children in turn, each one dead
# (or retired) before it said they returned: a handler that kills its process is not
# told for ever.
TELL_TRIES = 3
# After the child took a lease, this thread goes on looking once per long-run horizon for
# this long, instead of sleeping until the child tells it of the next: a client that
# submits one task at a time would otherwise have the child write to the pipe on its way
# to each task, and this thread wake while the task runs.
STAY_AWAKE = 1.0
# multiprocessing reads a forked child's exit code from its forkserver's pipe, once: two
# threads polling the same child at the same moment leave one of them with the pipe's
# end, which it takes for exit code 255. Process.start() polls every child of the
# process (multiprocessing.process._cleanup), so a watch starting a child while another
# read its own child's end made a retired or stopped child look like a crash. Every
# start and every poll of a child goes through this lock.
_PROCESSES = threading.Lock()


class Awake:
    """Whether this thread, its child idle, sleeps until told or looks again on its own:
    on its own for STAY_AWAKE after the child last took a lease (its record's generation
    moved on), so that a run starting meanwhile is looked at within a horizon anyway."""

    def __init__(self) -> None:
        self._gen = 0
        self._took_at = float("-inf")

    def delay(self, snap: Snapshot, look_in: float | None, now: float) -> float | None:
        """``look_in`` (the run's next look, None while idle), or the horizon while the
        child took a lease lately."""
        if snap.gen != self._gen:
            self._gen, self._took_at = snap.gen, now
        if look_in is None and now - self._took_at < STAY_AWAKE:
            return prefetch.LONG_RUN_S
        return look_in


def pool_context(concurrency: int, imports: Sequence[str] = (), *, fork_here: bool = False
                 ) -> SpawnContext | ForkServerContext:
    """How a worker of ``concurrency`` slots starts its pool children: forked from one
    forkserver that has imported their code (``worker.preload``), and the task modules
    ``imports`` (named to it in its environment, which it inherits), so that they share its
    memory, and a child replaced after a crash, a timeout or a cancel starts in
    milliseconds. ``fork_here``: the forkserver is forked from this process, the
    supervisor, whose memory it then shares too (``worker.zygote``), for a single child as
    well. Otherwise it is a new interpreter, and a single child is spawned (a forkserver
    would be one more process for nothing to share). Spawn where there is no forkserver
    (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    if not zygote.running():  # what a forkserver started now imports
        ctx.set_forkserver_preload([PRELOAD])
        if imports:
            os.environ[POOL_IMPORTS_ENV] = ",".join(imports)
        else:
            os.environ.pop(POOL_IMPORTS_ENV, None)
        if fork_here:
            zygote.start([PRELOAD])
    if concurrency > 1 or (fork_here and zygote.running()):
        return ctx
    os.environ.pop(POOL_IMPORTS_ENV, None)
    return multiprocessing.get_context("spawn")


class ChildWatch(threading.Thread):
    """The supervisor's thread for one pool child. The child is the slot (it fetches, runs
    and acknowledges on its own); this thread only watches it, hence not a slot itself."""

    def __init__(self, index: int, spec: ChildSpec, scripts: Scripts, acker: Acker,
                 holding: Holding, parts: Sequence[Scripts] = (),
                 ackers: Sequence[Acker] = ()) -> None:
        super().__init__(name=f"child-watch-{index}", daemon=True)
        self.spec = spec
        self.worker_id = spec.worker_id
        self.scripts = scripts
        self.acker = acker  # stores the failures of crashed and timed-out runs
        # With several partitions, each one's scripts and ack thread: a lease is settled
        # in its own.
        self.parts = parts or (scripts,)
        self.ackers = ackers or (acker,)
        self.holding = holding  # the worker's: long runs, run times
        self.ctx = pool_context(spec.concurrency,
                                spec.imports if spec.settings.preload_tasks else (),
                                fork_here=True)
        self.record = Record(self.ctx)
        self.stopping = False
        self.killing = False  # killed at shutdown: its task is left to the dispatcher
        self.cancelled: tuple[str, str] | None = None  # (task id, token) killed for a cancel
        self.retiring: str | None = None  # why the child said it leaves (worker.retire)
        self._shown: tuple[int, str] | None = None  # (gen, task id) given to holding
        self._awake = Awake()
        # Runs whose state handlers a child was told to call and did not say it had:
        # number -> (the run, how many children were told).
        self._untold: dict[int, tuple[statehooks.Killed, int]] = {}
        self._told = 0
        self._spawn()

    def _spawn(self) -> None:
        self.record.clear()
        self.retiring = None
        conn, child_conn = self.ctx.Pipe()
        process = self.ctx.Process(target=child.main,
                                   args=(child_conn, self.record.shared, self.spec),
                                   name="balancer-task", daemon=True)
        with _PROCESSES:
            process.start()
        self.conn, self.process = conn, process
        if self.stopping:  # stop() came while this child started: it must not fetch
            self.stop()
        self.spawned_at = time.monotonic()
        child_conn.close()
        self._tell_again()

    # -- what the worker asks --------------------------------------------------------

    def wait_ready(self, timeout: float) -> str | None:
        """Wait until the child can take tasks: None, or why it cannot."""
        why = ""
        if self.conn.poll(timeout):
            try:
                message = codec.unpack(self.conn.recv_bytes())
                if message == [child.READY]:
                    return None
                if isinstance(message, list) and message[:1] == [child.FAILED]:
                    why = f": {message[1]}"
            except (EOFError, OSError, CodecError, IndexError):
                pass
        self._join(0.5)
        if self.process.exitcode is not None:
            return (f"its pool process exited with code {self.process.exitcode} on start-up"
                    f"{why}")
        return f"its pool process did not start within {timeout:.0f}s"

    @property
    def current(self) -> str | None:
        """The task id the child holds (taken, running or being acknowledged), if any."""
        snap = self.record.read()
        return snap.lease.task_id if snap.lease else None

    def held_ids(self) -> set[str]:
        """The task ids the child holds (taken out of the inbox, not yet acknowledged): the
        one it runs and those of its batch."""
        ids = {task_id for task_id, *_ in self.record.held()}
        current = self.current
        if current is not None:
            ids.add(current)
        return ids

    def cancel(self, task_id: str, token: str) -> bool:
        """The flow of this lease was cancelled (its lease is gone in Redis): if the child
        runs it, kill the child (this thread replaces it); if the lease waits in the
        child's batch, have the child hand back what it has not started. Whether the
        child held it."""
        snap = self.record.read()
        lease = snap.lease
        if (lease is not None and snap.phase != IDLE and lease.task_id == task_id
                and lease.token == token):
            self.cancelled = (task_id, token)
            log.info("task=%s cancelled; killing pid=%s on worker=%s (replaced)", task_id,
                     self.process.pid, self.worker_id)
            self._kill()
            return True
        if any(t == task_id and k == token for t, k, *_ in self.record.held()):
            with contextlib.suppress(OSError):
                self.conn.send_bytes(child.MAKE_WAY)
            log.info("task=%s cancelled in the batch of pid=%s on worker=%s: the batch"
                     " is handed back", task_id, self.process.pid, self.worker_id)
            return True
        return False

    def stop(self) -> None:
        """Stop fetching: the child finishes its task, acknowledges it, and exits."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self.conn.send_bytes(child.STOP)

    def close(self, kill: bool = False) -> None:
        """After ``stop`` and the grace period: kill a child still running."""
        if kill and self._alive():
            self.killing = True
            self._kill()
        self._join(5)
        if self.ident is not None:  # started
            self.join(5)

    # -- watching --------------------------------------------------------------------

    def run(self) -> None:
        while True:
            snap = self.record.read()
            self._show(snap)
            delay = self._awake.delay(snap, self._next_look(snap), time.monotonic())
            if delay is None:
                self.record.set_asleep(True)
                snap = self.record.read()  # a lease taken meanwhile was not told
                delay = IDLE_WAIT if snap.phase == IDLE else 0.0
            ready = wait([self.conn, self.process.sentinel], delay)
            self.record.set_asleep(False)
            if self.process.sentinel in ready or not self._alive():
                self._end_group()
                self._join(5)
                self._read_news()  # what it said before it went (that it retires)
                expected = self.cancelled is not None or self._retired()
                crashed = self._settle(self._died())
                if self.stopping:
                    return
                if not expected and time.monotonic() - self.spawned_at < EARLY_DEATH_S:
                    time.sleep(RESTART_BACKOFF)
                self._spawn()
                if crashed is not None:
                    self._tell(crashed)
                continue
            if self.conn in ready:
                self._read_news()
            self._check_deadline()

    def _next_look(self, snap: Snapshot) -> float | None:
        """Seconds until the run must be looked at again; None while the child is idle."""
        if snap.phase == IDLE:
            return None
        if snap.phase != RUNNING or snap.lease is None:
            return prefetch.LONG_RUN_S  # taken or finishing: a run may start at once
        now = time.monotonic()
        horizon = snap.started + prefetch.LONG_RUN_S
        if self._shown is not None and self._shown[0] == snap.gen:
            horizon = now + SHOWN_LOOK  # the child tells when a long run ends
        if snap.lease.timeout is not None:
            horizon = min(horizon, snap.clock + snap.lease.timeout)
        return max(0.0, horizon - now)

    def _show(self, snap: Snapshot) -> None:
        """Give a run past the long-run horizon to the worker's holding (the marker shows
        it, the worker makes way for it); take back one that ended."""
        lease = snap.lease
        shown = self._shown
        if shown is not None and (snap.phase != RUNNING or shown[0] != snap.gen):
            self.holding.release(shown[1])
            self._shown = shown = None
        if (shown is None and snap.phase == RUNNING and lease is not None
                and time.monotonic() - snap.started >= prefetch.LONG_RUN_S):
            self.holding.add(lease)
            self.holding.start(lease.task_id, at=snap.started)
            self._shown = (snap.gen, lease.task_id)
            with contextlib.suppress(OSError):  # what it took ahead must not wait
                self.conn.send_bytes(child.MAKE_WAY)

    def _read_news(self) -> None:
        while self.conn.poll():
            try:
                message = codec.unpack(self.conn.recv_bytes())
            except (EOFError, OSError):
                return  # the sentinel tells the rest
            except CodecError:
                continue
            if message and message[0] == b"d":
                self.holding.learn(str(message[1]), float(message[2]))
            elif message and message[0] == child.RETIRING:
                self.retiring = str(message[1])
            elif message and message[0] == child.HANDLED:
                self._untold.pop(message[1], None)

    def _check_deadline(self) -> None:
        snap = self.record.read()
        lease = snap.lease
        if snap.phase != RUNNING or lease is None or lease.timeout is None:
            return
        if time.monotonic() - snap.clock < lease.timeout:  # a loop's: its iteration's
            return
        log.warning("task=%s passed its timeout of %ss; killing pid=%s on worker=%s",
                    lease.task_id, lease.timeout, self.process.pid, self.worker_id)
        self._kill()
        self._join(5)
        error = ErrorInfo("TimeoutError", f"task {lease.fn} ran past its timeout of"
                                          f" {lease.timeout}s and was stopped")
        outcome = Outcome.failure(error)
        runs = self._runs_so_far(lease)  # before the failure below counts this one
        killed = statehooks.Killed.of(lease, error, *runs[:2]) if runs is not None else None
        if (killed is not None and killed.retry_left() and not self.stopping
                and not askretry.retry_wanted(self.ctx, self.spec, killed)):
            outcome = dataclasses.replace(outcome, retryable=False)
            killed = killed._replace(refused=True)
        self._settle(snap, outcome)
        if not self.stopping:
            self._spawn()  # else the next look finds it dead and the thread ends
            if killed is not None:
                self._tell(killed)

    def _tell(self, killed: statehooks.Killed) -> None:
        """Have the new child call the state handlers of the run that ended with the last
        one (worker.statehooks: a process of the pool imports the task's module). Kept
        until it says they returned: a child that dies first (the next crashing task came
        to it) or retires leaves them to the one after it."""
        self._told += 1
        self._untold[self._told] = (killed, 0)
        self._send_tell(self._told)

    def _tell_again(self) -> None:
        """Tell a child just started what the last one did not say it had called."""
        for number, (killed, tries) in list(self._untold.items()):
            if tries < TELL_TRIES:
                self._send_tell(number)
                continue
            del self._untold[number]
            log.error("task=%s: its state handlers were not told of its run's end: %d pool"
                      " processes died before they returned, on worker=%s", killed.task_id,
                      tries, self.worker_id)

    def _send_tell(self, number: int) -> None:
        killed, tries = self._untold[number]
        self._untold[number] = (killed, tries + 1)
        with contextlib.suppress(OSError):
            self.conn.send_bytes(child.RUN_ENDED + codec.pack([number, [*killed]]))

    def _runs_so_far(self, lease: Lease) -> tuple[int, int, int] | None:
        """A task's failures so far, its retries and its crashes, as its record holds
        them; None when Redis cannot say (its state handlers are then not told of how
        the run ended)."""
        part = self.parts[lease.partition]
        try:
            failures, retries, lost = as_opt_bytes_list(part.client.hmget(
                part.keys.task(lease.task_id), ["failures", "retries", "lost"]))
        except (redis.RedisError, UnexpectedReply, ValueError):
            return None
        return field_int(failures), field_int(retries), field_int(lost)

    def _crashed(self, lease: Lease, error: ErrorInfo) -> statehooks.Killed | None:
        """How a run whose process died ends, for its state handlers: put back, or
        quarantined at the poison threshold (fail.lua's rule, read before the crash is
        counted); None when Redis cannot say."""
        runs = self._runs_so_far(lease)
        if runs is None:
            return None
        failures, retries, lost = runs
        ends = (statehooks.QUARANTINED if lost + 1 >= self.spec.settings.poison_threshold
                else statehooks.PUT_BACK)
        return statehooks.Killed.of(lease, error, failures, retries)._replace(
            crash=ends, lost=lost)

    def _kill(self) -> None:
        """Kill the child, and the processes its tasks started (``_end_group``)."""
        self._end_group()
        self.process.kill()

    def _end_group(self) -> None:
        """Kill what is left of the child's process group: the processes its tasks started
        (worker.child: it leads a group of its own, which they join), which would live on
        orphaned, for good, once the child is gone. Nothing when none is left, or when the
        child never came to lead one (no group has its id then). Called while the child
        lives or before it is reaped, so that its id cannot have been reused."""
        pid = self.process.pid
        if pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def _alive(self) -> bool:
        with _PROCESSES:
            return self.process.is_alive()

    def _join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the child's end, then read its exit code (once it
        is read, ``process.exitcode`` reads nothing more). The read waits for the code:
        a spawned child closes the sentinel as it exits, a moment before it can be
        reaped."""
        if wait([self.process.sentinel], timeout):
            with _PROCESSES:
                self.process.join()

    def _retired(self) -> bool:
        """The child left as it said it would (worker.retire), its exit clean."""
        return self.retiring is not None and self.process.exitcode == 0

    def _died(self) -> Snapshot:
        snap = self.record.read()
        if self._retired():
            log.info("pool process pid=%s of worker=%s retired after %s; a fresh one takes"
                     " its place", self.process.pid, self.worker_id, self.retiring)
        elif not self.stopping and self.cancelled is None:
            log.error("pool process pid=%s of worker=%s died (exit code %s) while %s;"
                      " replacing it", self.process.pid, self.worker_id,
                      self.process.exitcode, PHASES[snap.phase])
        return snap

    def _settle(self, snap: Snapshot,
                outcome: Outcome | None = None) -> statehooks.Killed | None:
        """Settle what a dead child held: a run fails (a crash unless ``outcome`` says
        otherwise), a lease not started or a result not stored goes back to its queue.
        A crashed run, for its state handlers (``_crashed``); else None."""
        lease = snap.lease
        held = self.record.held()
        self.record.clear()
        if self._shown is not None:
            self.holding.release(self._shown[1])
            self._shown = None
        cancelled, self.cancelled = self.cancelled, None
        crashed = None
        if self.killing:
            return None  # killed after the grace period: the dispatcher re-queues its tasks
        if cancelled is not None and lease is not None and snap.phase != IDLE:
            if (lease.task_id, lease.token) != cancelled:
                # It had moved on to another task when it was killed: that one runs again.
                back = [LeasedTask(lease.task_id, lease.queue, lease.token)]
                part = self.parts[lease.partition]
                persist("be handed back", lease.task_id,
                        lambda: part.release(self.worker_id, back))
            lease = None  # settled: cancelled (no lease any more), or handed back
        if lease is not None and snap.phase == RUNNING:
            if outcome is None:
                error = ErrorInfo("balancer.WorkerProcessDied",
                                  f"the process running task {lease.fn} died (exit code"
                                  f" {self.process.exitcode})")
                outcome = Outcome.failure(error, crashed=True)
                crashed = None if self.stopping else self._crashed(lease, error)
            took = max(0.0, time.monotonic() - snap.started)
            self.ackers[lease.partition].store(
                [Finished(lease, outcome, snap.started_ms, took, None)])
        elif lease is not None and snap.phase in (TAKEN, FINISHING):
            part = self.parts[lease.partition]
            n = persist("be handed back", lease.task_id, lambda: part.release(
                self.worker_id, [LeasedTask(lease.task_id, lease.queue, lease.token)]))
            if n:
                log.info("task=%s handed back: its pool process died before %s",
                         lease.task_id, "starting it" if snap.phase == TAKEN else
                         "storing its result")
        # The rest of its batch: not started, or run without the result stored (a lease
        # already acknowledged is no longer one, and is left alone).
        for p, part in enumerate(self.parts):
            others = [LeasedTask(task_id, queue, token) for task_id, token, queue, of in held
                      if of == p and (lease is None or task_id != lease.task_id)]
            if not others:
                continue
            n = persist("be handed back", others[0].task_id,
                        lambda: part.release(self.worker_id, others))  # noqa: B023
            if n:
                log.info("worker=%s handed back %d tasks of the batch of its pool process"
                         " that died: %s", self.worker_id, n,
                         ",".join(t.task_id for t in others[:10]))
        return crashed
