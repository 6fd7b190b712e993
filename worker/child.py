"""A pool child: one slot of a process-pool worker, in a process of its own.

It fetches from the worker's inbox, runs and acknowledges its tasks itself, with its own
Redis connection, as the slot thread of a thread-pool worker does (the same ``Inbox`` and
``Acker``; its slot takes short tasks in batches, ``worker.batchslot``). A task then costs
the supervisor nothing: no pipe to the child and back, no thread switch. What the
supervisor must still know (the lease held, when its run started, the batch) the child
writes into its shared ``Record``; a crash or a hang costs only this process, which the
supervisor replaces and whose tasks it settles.

The pipe to the supervisor carries little: from the supervisor, "stop" and "make way"; to
it, news of run times and, when the supervisor sleeps, a note that a lease was taken.

A child dies with its supervisor (on Linux, the kernel kills it: PR_SET_PDEATHSIG), as a
thread of it would: the dispatcher then takes back the worker's tasks, counting the run
as lost, and no orphan runs on unwatched. Elsewhere, the pipe's end tells the child that
its supervisor died, and it stops fetching.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from balancer.common import codec, logs, prefetch
from balancer.common.codec import CodecError
from balancer.common.connection import connect
from balancer.common.importpath import TaskPolicy, importing_tasks, set_policy
from balancer.common.keys import Keys
from balancer.common.scripts import Scripts
from balancer.common.settings import POOL_IMPORTS_ENV, WORKER_CHILD_ENV, Settings
from balancer.common.signals import Lease
from balancer.common.urls import scrub
from balancer.worker import looping, statehooks
from balancer.worker.ack import Acker
from balancer.worker.batchslot import BatchSlot
from balancer.worker.doorbell import DoorbellInbox
from balancer.worker.executor import execute
from balancer.worker.holding import Holding
from balancer.worker.inbox import Inbox
from balancer.worker.outcome import Outcome
from balancer.worker.record import Record
from balancer.worker.retire import Retirement

log = logging.getLogger("worker")

STOP = b"stop"
MAKE_WAY = b"w"  # from the supervisor: a run went long; hand back what waits behind it
TOOK = b"t"  # to the supervisor: a lease was taken (sent only when it sleeps)
ENDED = b"e"  # to the supervisor: a run past the long-run horizon ended
READY = b"r"  # to the supervisor: tasks imported, Redis reached, about to fetch
FAILED = b"f"  # to the supervisor, with why: it cannot start (Redis refused it, ...)
RETIRING = b"x"  # to the supervisor: this child leaves for a fresh one (worker.retire)
# From the supervisor, then a packed [number, statehooks.Killed]: the run whose process
# ended under it (killed past its timeout, or crashed), whose state handlers this child
# calls; HANDLED, with that number, goes back once they returned. The supervisor tells the
# next child again what a child that died (or retired) did not answer.
RUN_ENDED = b"o"
HANDLED = b"h"
PR_SET_PDEATHSIG = 1
# Run times are passed on when they move by this share, at most every NEWS_EVERY seconds
# (the heartbeat tells the dispatcher of a change of a quarter, once a second), and at once
# when they change how deep the dispatcher prefetches (``Holding.learn``'s news).
NEWS_SHARE = 0.1
NEWS_EVERY = 0.25


@dataclass(frozen=True)
class ChildSpec:
    """What a pool child needs to start (pickled to it at spawn)."""

    worker_id: str
    settings: Settings
    imports: tuple[str, ...]
    cwd: str
    concurrency: int  # of the whole worker: it decides when an ack may be quiet
    log_level: str
    supervisor_pid: int
    policy: TaskPolicy
    index: int = 0  # the slot's: its field of ahead:<worker>
    partitions: int = 1  # the cluster's, read by the supervisor: the child serves them all


class InlineRunner:
    """Runs the task on the calling thread: this process is the task's sandbox, and its
    supervisor kills it past the task's timeout, counted from ``record``'s clock (each
    iteration of a looping run restarts it: worker/looping.py)."""

    def __init__(self, max_result_bytes: int, record: Record | None = None) -> None:
        self.max_result_bytes = max_result_bytes
        self.record = record

    def run(self, fn_path: str, args_blob: bytes, timeout: float | None) -> Outcome:
        looping.restarting(self._restart if timeout is not None else None)
        return execute(fn_path, args_blob, self.max_result_bytes, timeout)

    def _restart(self) -> None:
        if self.record is not None:
            self.record.looped(time.monotonic())

    def stop_task(self, why: str) -> None:
        """Nothing here: the supervisor kills this process instead."""

    def close(self, kill: bool = False) -> None:
        pass


class RecordedHolding(Holding):
    """The child's holding, mirrored into its record and, for run times, to the pipe.

    The record describes the lease the child runs next or runs now, and lists all it holds
    once a batch came in."""

    def __init__(self, record: Record, conn: Connection) -> None:
        super().__init__()
        self.record = record
        self.conn = conn
        self._sent: dict[str, tuple[float, float]] = {}  # queue -> (mean sent, when)
        self._news = False
        self.on_news = self._note_news
        self._described: str | None = None  # the task id the record describes
        self._listed = True  # the record lists every lease held
        self._sending = threading.Lock()  # the slot's thread, the control's, handlers'

    def add(self, lease: Lease) -> None:
        super().add(lease)
        if self._described is None:
            self._describe(lease)
        else:
            self._listed = False

    def _describe(self, lease: Lease) -> None:
        self._described = lease.task_id
        if self.record.took(lease):
            self._send([TOOK])

    def start(self, task_id: str, at: float | None = None, started_ms: int = 0) -> None:
        if not self._listed:
            self._listed = True
            self.record.hold(self.leases())
        if task_id != self._described:
            lease = self.lease(task_id)
            if lease is not None:
                self._describe(lease)
        self.record.started(time.monotonic(), started_ms)

    def finish(self, queue: str, took_ms: float) -> float:
        self.record.finishing()
        if took_ms >= prefetch.LONG_RUN_S * 1000:
            self._send([ENDED])
        self._news = False
        mean = super().finish(queue, took_ms)  # sets _news through on_news
        sent, at = self._sent.get(queue, (None, 0.0))
        now = time.monotonic()
        if self._news or sent is None or (abs(mean - sent) > NEWS_SHARE * max(sent, 0.1)
                                          and now - at >= NEWS_EVERY):
            self._sent[queue] = (mean, now)
            self._send([b"d", queue, mean])
        return mean

    def _note_news(self) -> None:
        self._news = True

    def release(self, task_id: str) -> None:
        super().release(task_id)
        if task_id == self._described:
            self._described = None
            self.record.idle()

    def _send(self, message: list[Any]) -> None:
        # A supervisor gone is seen by the control thread, which stops this process.
        with self._sending, contextlib.suppress(OSError):
            self.conn.send_bytes(codec.pack(message))

    def handled(self, number: int) -> None:
        """The state handlers told with ``number`` (RUN_ENDED) returned."""
        self._send([HANDLED, number])


def _control(conn: Connection, stopping: threading.Event, inbox: Inbox,
             slot: BatchSlot, holding: RecordedHolding) -> None:
    """Make way when asked; wait for "stop" (or the supervisor's death), then stop
    fetching."""
    try:
        while (message := conn.recv_bytes()) != STOP:
            if message == MAKE_WAY:
                slot.make_way()
            elif message.startswith(RUN_ENDED):
                _tell_handlers(message[len(RUN_ENDED):], slot.worker_id, holding.handled)
    except (EOFError, OSError):
        log.warning("pool child pid=%s: its supervisor is gone; stopping", os.getpid())
    stopping.set()
    inbox.close(timeout=0)


def _tell_handlers(packed: bytes, worker_id: str, handled: Callable[[int], None]) -> None:
    """Call the state handlers of a run whose process ended under it (killed past its
    timeout, or crashed), on a thread of their own (one that hangs holds up nothing
    else), and say when they returned."""
    try:
        number, fields = codec.unpack(packed)
        killed = statehooks.Killed(*fields)
    except (CodecError, TypeError, ValueError):
        return

    def tell() -> None:
        try:
            killed.tell_handlers(worker_id)
        finally:  # told, whatever they did: only a process's death calls for another try
            handled(number)

    threading.Thread(target=tell, name="handlers", daemon=True).start()


def _die_with(supervisor: int) -> None:
    """Be killed by the kernel when the parent dies: the supervisor, or the forkserver
    that forked this child, which ends with the supervisor (worker.preload). Exit now if
    the supervisor died before we asked."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor and not _alive(supervisor):
        os._exit(1)


def _lead_a_group() -> None:
    """Lead a process group of its own, which the processes a task starts join: the
    supervisor kills the group with this child (a timeout, a cancel, the end of a grace
    period) and once this child is gone, so that a helper a task started (a browser,
    ffmpeg, a shell) does not live on orphaned. One started in a session of its own
    (``start_new_session=True``) is the task's to end. Terminal signals, sent to the
    worker's group, no longer reach this child, which ignores them anyway."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)


def _let_the_forkserver_go() -> None:
    """A child forked by the pool's forkserver holds a copy of the pipe that keeps the
    forkserver alive (multiprocessing passes it so that a child may fork through it in
    turn): while any child held it, a forkserver outlived its dead supervisor, and so did
    a child running a task, which finished it unwatched. Closed here, the forkserver ends
    with the supervisor alone, and the kernel then kills this child (PR_SET_PDEATHSIG).
    A spawned child holds none."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and isinstance(fd, int):
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or its number another user's
        return False
    return True


def _slot(conn: Connection, shared: Any, spec: ChildSpec) -> tuple[BatchSlot, RecordedHolding]:
    """Import the tasks, reach Redis and build this child's slot (its control thread
    started): what stands between the child and its first fetch."""
    import_modules(spec)
    settings = spec.settings
    client = connect(settings.server_url)
    keys = Keys(settings.namespace)
    record = Record.attach(shared)
    holding = RecordedHolding(record, conn)
    stopping = threading.Event()
    # Every pool child of the worker blocks on the same inbox.
    inbox = (Inbox(spec.worker_id, client, keys, holding.add, stopping, spec.concurrency)
             if spec.partitions == 1 else
             DoorbellInbox(spec.worker_id, client, keys, spec.partitions, holding.add,
                           stopping, spec.concurrency))
    ackers = [Acker(spec.worker_id, Scripts.for_settings(client, keys.of(p), settings),
                    settings, holding, lambda: 0, spec.concurrency)
              for p in range(spec.partitions)]
    slot = BatchSlot(spec.worker_id, client, keys,
                     InlineRunner(settings.max_payload_bytes, record),
                     inbox, ackers[0], holding, stopping, ahead_field=str(spec.index),
                     ackers=ackers,
                     retirement=Retirement.of(settings.max_tasks_per_child,
                                              settings.max_memory_per_child),
                     on_retire=lambda why: holding._send([RETIRING, why]))
    threading.Thread(target=_control, args=(conn, stopping, inbox, slot, holding),
                     name="control", daemon=True).start()
    client.ping()
    return slot, holding


def prepare(spec: ChildSpec) -> None:
    """Make this process one of the pool's (a child, or worker.askretry's asking process):
    it dies with its supervisor, leads a group of its own, leaves stopping to the
    supervisor, logs as the worker does and imports tasks under the worker's rules."""
    _die_with(spec.supervisor_pid)
    _let_the_forkserver_go()
    _lead_a_group()
    # The supervisor decides when we stop (over the pipe): a SIGTERM or ctrl-C sent to the
    # whole process group (systemd's default, `timeout`, a terminal) must not kill the
    # task this child runs while the supervisor grants it its grace period.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.setup(spec.log_level, spec.settings.log_format)
    if spec.cwd not in sys.path:
        sys.path.insert(0, spec.cwd)
    os.environ[WORKER_CHILD_ENV] = "1"
    set_policy(spec.policy)


def preload_imports() -> None:
    """In a pool's forkserver (worker.preload): the worker's --import modules, named by
    its supervisor in POOL_IMPORTS_ENV, imported once so that every child forked from it
    shares them (and a module's top-level ``flow.run()`` does not fire, as in a child).
    One that fails here is left to each child, whose own import says why, as without a
    preload. A module that starts a thread at import is said: a fork does not carry
    threads over, so the children would run its tasks without it."""
    names = os.environ.pop(POOL_IMPORTS_ENV, "")
    with importing_tasks():
        for module in filter(None, names.split(",")):
            try:
                __import__(module)
            except (Exception, SystemExit):  # SystemExit: it parsed sys.argv
                continue
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        log.warning("the --import modules started threads at import (%s): the pool"
                    " processes, forked after it, do not have them; start the worker with"
                    " --no-preload for each pool process to import the modules itself",
                    ", ".join(threads))


class ImportFailed(Exception):
    """An --import module failed to import; the message names it and what it raised."""


def import_modules(spec: ChildSpec) -> None:
    """The worker's --import modules, as task modules. A process pool's supervisor does not
    import them (it runs no task: what they load would be held once more, for nothing),
    so a module that fails is first told here, and the supervisor stops the start with
    this message."""
    import_task_modules(spec.imports)


def import_task_modules(modules: Sequence[str]) -> None:
    """Import ``modules`` as task modules; ImportFailed names the first that fails."""
    with importing_tasks():
        for module in modules:
            try:
                __import__(module)
            except (Exception, SystemExit) as exc:  # SystemExit: it parsed sys.argv
                raise ImportFailed(f"--import {module}: {type(exc).__name__}: {exc}") from exc


def main(conn: Connection, shared: Any, spec: ChildSpec) -> None:
    prepare(spec)
    try:
        slot, holding = _slot(conn, shared, spec)
    except BaseException as exc:  # whatever stops it, its supervisor is told why
        if isinstance(exc, ImportFailed):  # the module's own traceback, not ours around it
            why = str(exc)
            log.error("pool child pid=%s of worker=%s cannot start: %s", os.getpid(),
                      spec.worker_id, why, exc_info=exc.__cause__)
        else:
            why = f"{type(exc).__name__}: {exc}"
            log.exception("pool child pid=%s of worker=%s cannot start", os.getpid(),
                          spec.worker_id)
        with contextlib.suppress(OSError):
            conn.send_bytes(codec.pack([FAILED, scrub(why)]))
        _leave(1)
    holding._send([READY])
    code = 0
    try:
        slot.run()  # on this thread: until stopped
    except BaseException:
        log.exception("pool child pid=%s of worker=%s failed", os.getpid(), spec.worker_id)
        code = 1
    _leave(code)


def _leave(code: int) -> NoReturn:
    """Exit now that the slot has stopped, whatever threads a task left running: a
    non-daemon one would hold the process at its exit (multiprocessing joins them), and
    the supervisor would wait out its grace period, then kill it and report a task still
    running that was not."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a task may have closed it
            stream.flush()
    os._exit(code)
