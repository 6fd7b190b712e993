"""A worker process: registers, runs its threads, and stops cleanly.

Threads, each with one job: the heartbeat (liveness and load), the slots, the ack
thread (results to Redis, in batches), the marker (shows long runs as running) and the
reconciler (returns leases the worker lost track of).

A slot of a thread pool is a thread that fetches from the inbox when idle, runs the task
and acknowledges it. A slot of a process pool is a child process doing the same on its
own (``worker.child``); the supervisor's thread for it only watches it (``ChildWatch``):
timeouts, long runs, crashes.

On SIGTERM or ctrl-C it stops fetching, hands the unstarted tasks back at once, lets
running tasks finish within the grace period, then deregisters. A second signal stops at
once; whatever was still running is re-queued by the dispatcher.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import redis
from balancer.common import clusterfacts, partitions, protocol, signals
from balancer.common.importpath import TaskPolicy, set_policy
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.replies import as_bytes_list
from balancer.common.retry import RETRYABLE, describe, wait_out
from balancer.common.scripts import LeasedTask, Scripts
from balancer.common.settings import Settings
from balancer.worker import child, hostlimits
from balancer.worker.ack import Acker
from balancer.worker.cancels import CancelListener
from balancer.worker.child import ChildSpec
from balancer.worker.childwatch import ChildWatch
from balancer.worker.doorbell import DoorbellInbox
from balancer.worker.heartbeat import Heartbeat, HostLoad
from balancer.worker.holding import Holding
from balancer.worker.inbox import Inbox
from balancer.worker.interrupt import stragglers
from balancer.worker.marker import Marker
from balancer.worker.pool import ThreadRunner
from balancer.worker.reconcile import Reconciler
from balancer.worker.slot import Slot

log = logging.getLogger("worker")


CHILD_START_TIMEOUT = 60.0
# How often a running worker reads the cluster's partition count again (it stops, asking
# to be restarted, when it is no longer the count it serves) and its dispatcher's stamp.
PARTITIONS_CHECK = clusterfacts.CACHE_FOR


def _leased(heartbeat: Heartbeat, partition: int) -> Callable[[], int]:
    """The leases Redis counted in ``partition`` at the heartbeat's last full beat, as
    that partition's reconciler reads them."""
    return lambda: heartbeat.leased_in[partition]


def _partition_count(client: redis.Redis, keys: Keys) -> int:
    """The cluster's partition count, read at start, waiting out a Redis that cannot
    serve yet (``wait_out``): ``worker start`` waits for a loading Redis before it gets
    here (``reach``), but one restarted in between answers LOADING, which ended the start
    with a traceback."""
    counted: list[int] = []
    wait_out(lambda: counted.append(partitions.count(client, keys)), log,
             "worker cannot start yet", "worker could start")
    return counted[-1]


class WorkerError(RuntimeError):
    """The worker cannot start as configured."""


class Worker:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        *,
        queues: tuple[str, ...] = ("default",),
        concurrency: int = 1,
        pool: str = "process",
        name: str | None = None,
        imports: tuple[str, ...] = (),
        allow: tuple[str, ...] = (),
        log_level: str = "INFO",
    ) -> None:
        if concurrency < 1:
            raise WorkerError("concurrency must be at least 1")
        if pool not in ("process", "thread"):
            raise WorkerError(f"unknown pool {pool!r}: use 'process' or 'thread'")
        why = hostlimits.too_many(concurrency, pool)
        if why is not None:
            raise WorkerError(why)
        if not queues:
            raise WorkerError("a worker needs at least one queue")
        if name is not None:
            try:
                signals.check_worker_id(name)
            except ValueError as exc:
                raise WorkerError(str(exc)) from None
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.scripts = Scripts.for_settings(client, self.keys, settings)
        # Every partition of the cluster is served (common/partitions.py): its scripts, by
        # partition; each has this worker's registration, inbox, leases and ack thread.
        self.count = _partition_count(client, self.keys)
        self.parts = [self.scripts] + [
            Scripts.for_settings(client, self.keys.of(p), settings)
            for p in range(1, self.count)]
        self.queues = tuple(dict.fromkeys(queues))
        self.concurrency = concurrency
        self.pool = pool
        self.id = name or f"{socket.gethostname()}-{os.getpid()}"
        self.imports = list(imports)
        self.policy = TaskPolicy.of(self.imports, (*settings.allowed, *allow))
        self.log_level = log_level
        self.fetching = threading.Event()  # set: stop taking work
        self.stopped = threading.Event()  # set: background threads stop
        self.draining = False
        self._told: protocol.Stamp | None = None  # the other release last said
        self.holding = Holding()
        self.host = HostLoad()
        self._sampling = threading.Lock()  # the heartbeat thread and a beat out of turn sample it
        self.inbox = (Inbox(self.id, client, self.keys, self.holding.add, self.fetching)
                      if self.count == 1 else
                      DoorbellInbox(self.id, client, self.keys, self.count, self.holding.add,
                                    self.fetching))
        self.slots: list[Slot | ChildWatch] = []
        self.registered = False  # its first heartbeat went through
        # One thread beats in every partition, pipelined (worker/heartbeat.py).
        self.heartbeat = Heartbeat(self.id, self.scripts, settings, self.info, self.stopped,
                                   self.parts)
        self.holding.on_news = self.heartbeat.hurry
        self.ackers = [Acker(self.id, s, settings, self.holding, self.busy, concurrency)
                       for s in self.parts]
        self.acker = self.ackers[0]
        self.marker = Marker(self.id, self.scripts, self.holding, self.stopped,
                             self.make_way, concurrency, self.sweep_behind_long_runs,
                             self.parts)
        self.reconcilers = [Reconciler(self.id, client, s, self.held_ids,
                                       _leased(self.heartbeat, p), self.stopped)
                            for p, s in enumerate(self.parts)]
        self.reconciler = self.reconcilers[0]
        self.listeners = [CancelListener(self.id, client, s.keys, self.stop_cancelled,
                                         self.stopped) for s in self.parts]
        self.cancels = self.listeners[0]
        self._slots_lock = threading.Lock()

    def _beat(self, now: bool = False) -> None:
        """A full heartbeat in every partition (``now``: logged if it registers again)."""
        if now:
            self.heartbeat.beat_now()
        else:
            self.heartbeat.beat()

    def busy(self) -> int:
        return sum(s.current is not None for s in self.slots)

    def held_ids(self) -> set[str]:
        """Ids of the tasks this worker holds: taken out of its inbox and not yet
        acknowledged (taken, running, being acknowledged). The reconciler compares them
        with the worker's leases in Redis; "leased" is that Redis-side count, which the
        dispatcher sees."""
        ids = self.holding.held_ids()
        for slot in self.slots:
            ids.update(slot.held_ids())
        return ids

    def info(self) -> WorkerInfo:
        with self._sampling:
            cpu, pressure, memory, load = self.host.sample()
        return WorkerInfo(
            id=self.id, queues=self.queues,
            capacity=0 if self.draining else self.concurrency,
            running=self.busy(), long_running=self.holding.long_running(), cpu=cpu,
            pressure=pressure, memory=memory,
            load_avg=load, host=socket.gethostname(), pid=os.getpid(), pool=self.pool,
            durations=self.holding.durations(), stuck=stragglers.alive(),
            protocol=protocol.VERSION, release=protocol.release(),
            beat_s=self.settings.heartbeat_interval)

    # -- starting --------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> None:
        """Import the tasks, start the slots and register. Until it registers, a Redis
        that refuses the worker for now (its connections at ``maxclients``, out of memory,
        loading after a restart, unreachable) is waited out, said once; ``stop`` set
        meanwhile ends the wait unregistered."""
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)  # tasks of scripts in the project folder import from here
        set_policy(self.policy)
        if self.pool == "thread":  # its slots run the tasks here
            try:
                child.import_task_modules(self.imports)
            except child.ImportFailed as exc:
                raise WorkerError(str(exc)) from exc
        # A process pool's processes import them (child.import_modules; one that fails
        # stops the start below, named): held here too, what a module loads (a model, a
        # library) would cost its memory once more, for nothing.
        self._claim_id()
        self.slots = self._make_slots()
        for slot in self.slots:
            # Registered only once every slot can run a task: a lease must not wait in the
            # inbox for a pool process still importing.
            why = slot.wait_ready(CHILD_START_TIMEOUT) if isinstance(slot, ChildWatch) else None
            if why is not None:
                for other in self.slots:
                    other.close(kill=True)
                raise WorkerError(f"worker {self.id!r} cannot start: {why} (see its log above)")
        self._start_threads()
        if not self._register(stop or threading.Event()):
            return
        self.heartbeat.start()
        log.info("worker=%s started: queues=%s concurrency=%d pool=%s", self.id,
                 ",".join(self.queues), self.concurrency, self.pool)
        self._check_partitions()

    def _register(self, stop: threading.Event) -> bool:
        """The first heartbeat, tried again while Redis cannot serve (``wait_out``); False
        if ``stop`` came first."""
        self.registered = wait_out(self._beat, log, f"worker={self.id} cannot register yet",
                                   f"worker={self.id} could register", stop)
        return self.registered

    def _start_threads(self) -> None:
        """Start the slots and the helper threads, before the worker registers: a host
        that cannot start that many threads is said, and no lease waits for a worker
        that is gone. (Until it registers, its inbox is empty: the slots wait.)"""
        threads = (*self.slots, *self.ackers, self.marker, *self.reconcilers, *self.listeners)
        try:
            for thread in threads:
                thread.start()
        except RuntimeError as exc:  # "can't start new thread": a limit of this host
            started = sum(1 for t in threads if t.ident is not None)
            for slot in self.slots:
                if isinstance(slot, ChildWatch):
                    slot.close(kill=True)
            raise WorkerError(
                f"worker {self.id!r} cannot start: this host let it start {started} of its"
                f" {len(threads)} threads ({exc}); lower --concurrency") from None

    def _make_slots(self) -> list[Slot | ChildWatch]:
        if self.pool == "process":
            spec = ChildSpec(self.id, self.settings, tuple(self.imports), os.getcwd(),
                             self.concurrency, self.log_level, os.getpid(), self.policy,
                             partitions=self.count)
            return [ChildWatch(i, dataclasses.replace(spec, index=i), self.scripts, self.acker,
                              self.holding, self.parts, self.ackers)
                    for i in range(self.concurrency)]
        return [self._thread_slot(i) for i in range(self.concurrency)]

    def _thread_slot(self, index: int) -> Slot:
        return Slot(index, self.id, self.client, self.keys,
                    ThreadRunner(self.settings.max_payload_bytes), self.inbox, self.acker,
                    self.holding, self.fetching, self.ackers)

    def _claim_id(self) -> None:
        """Refuse a name a live worker uses; let the dispatcher reap a dead namesake first
        (in every partition)."""
        for scripts in self.parts:
            self._claim_id_in(scripts.keys)

    def _claim_id_in(self, keys: Keys) -> None:
        deadline = time.monotonic() + self.settings.worker_timeout * 3 + 2
        while True:
            live = self.client.exists(keys.worker(self.id))
            leftovers = self.client.exists(keys.leases(self.id), keys.inbox(self.id))
            if not live and not leftovers:
                return
            if time.monotonic() > deadline:
                if live:
                    raise WorkerError(f"a live worker is already registered as {self.id!r};"
                                      " give this one another --name")
                raise WorkerError(f"tasks of an earlier worker {self.id!r} were not taken back;"
                                  " is `balancer serve` running?")
            if leftovers and not live:
                signals.push(self.client, keys.wake, signals.gone(self.id))
            log.info("worker=%s waits for an earlier worker of that name to be reaped", self.id)
            time.sleep(0.5)

    # -- running and stopping --------------------------------------------------------

    def run(self) -> None:
        """Start, then serve until SIGTERM/SIGINT, then shut down gracefully."""
        stop = threading.Event()
        signals_seen = 0

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info("worker=%s got %s: finishing running tasks (grace %.0fs)", self.id,
                         signal.Signals(signum).name, self.settings.shutdown_grace)
                stop.set()
            else:
                log.warning("worker=%s got a second signal: stopping now", self.id)
                os._exit(1)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start(stop)
        except RETRYABLE as exc:  # what waiting would not mend, or a start step's outage
            self.shutdown(grace=0)  # no slot runs a task yet: its pool children go now
            raise WorkerError(f"worker {self.id!r} cannot start: Redis refused it"
                              f" ({describe(exc)})") from None
        checked = time.monotonic()
        while not stop.wait(0.5):
            if self.heartbeat.failed.is_set():
                self.shutdown()
                raise WorkerError(f"worker {self.id!r} stopped: its heartbeat thread failed"
                                  " (see the log above)")
            if time.monotonic() - checked >= PARTITIONS_CHECK:
                checked = time.monotonic()
                self._check_partitions()
            self._check_stuck()
        self.shutdown()

    def _check_stuck(self) -> None:
        """Stop, asking for a restart, once as many task threads given up (past a timeout,
        or cancelled) still run as the worker has slots: each is inside a call that never
        returned to Python, holding what it holds (memory, sockets, perhaps a core), and
        only the end of the process frees them. Left alone they would pile up for good."""
        stuck = stragglers.alive()
        if self.pool == "thread" and stuck >= self.concurrency:
            log.error("worker=%s: %d task threads do not stop, as many as its slots: it stops"
                      " (its tasks finish first) to be started afresh", self.id, stuck)
            self.shutdown()
            raise WorkerError(
                f"worker {self.id!r} stopped: {stuck} task threads it gave up on do not stop"
                " (each inside a call that never returns to Python), as many as its slots;"
                " start it again (a process manager does: exit status 1), and run tasks that"
                " may hang in C in the process pool")

    def _check_partitions(self) -> None:
        """Stop, asking for a restart, once the cluster's partition count is not the one
        this worker serves (a serve stored another after this worker started): tasks in
        the partitions it does not serve would wait for ever."""
        try:
            count, stamp = clusterfacts.read(self.client, self.keys)
        except RETRYABLE:
            return
        self._check_stamp(stamp)
        if count != self.count:
            self.shutdown()
            raise WorkerError(f"worker {self.id!r} stopped: the cluster now has {count}"
                              f" partitions and it serves {self.count}; start it again")

    def _check_stamp(self, stamp: protocol.Stamp | None) -> None:
        """Say it, once per release of the leading dispatcher, when that dispatcher runs
        another protocol: it leases this worker nothing (README: Upgrading)."""
        if stamp is None or not protocol.other_release(stamp.version) or stamp == self._told:
            return
        self._told = stamp
        log.warning("worker=%s runs release %s (protocol %d) and the dispatcher leading the"
                    " cluster runs release %s (protocol %d): it leases this worker nothing"
                    " (README: Upgrading)", self.id, protocol.release(), protocol.VERSION,
                    stamp.release, stamp.version)

    def shutdown(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace if grace is None else grace
        self.fetching.set()
        self.draining = True
        for slot in self.slots:
            slot.stop()  # pool children stop fetching too
        self.inbox.close()
        try:
            if self.registered:  # else a beat now would register it, for nothing
                self._beat()  # capacity 0: the dispatchers stop assigning here
            self.hand_back()
        except RETRYABLE as exc:
            log.error("worker=%s could not hand back its inbox: %s", self.id, exc)
        deadline = time.monotonic() + grace
        for slot in self.slots:
            slot.join(max(0.0, deadline - time.monotonic()))
        late = [s for s in self.slots if s.is_alive()]
        for slot in self.slots:
            slot.close(kill=slot in late)
        if late:
            log.warning("worker=%s: %d tasks still running after the grace period; the"
                        " dispatcher re-queues them", self.id, len(late))
        for acker in self.ackers:
            acker.close()
        self.stopped.set()
        for listener in self.listeners:
            listener.close()
        self.heartbeat.hurry()  # to notice it must stop
        if self.heartbeat.is_alive():
            self.heartbeat.join(5)  # no beat may re-register us after we deregister
        try:
            self.hand_back()
            for scripts in self.parts:
                keys = scripts.keys
                pipe = self.client.pipeline(transaction=True)
                pipe.delete(keys.worker(self.id), keys.ahead(self.id),
                            keys.fetched(self.id), keys.cancels(self.id),
                            *([keys.doorbell(self.id)] if self.count > 1 else []))
                signals.push(pipe, keys.wake, signals.gone(self.id))
                pipe.execute()
        except RETRYABLE as exc:
            log.error("worker=%s could not deregister: %s", self.id, exc)
        log.info("worker=%s stopped", self.id)

    def stop_cancelled(self, task_id: str, token: str) -> bool:
        """A cancel took back the lease ``token`` of ``task_id``, which this worker took
        (``worker.cancels``): stop its run. A pool child running it is killed and
        replaced; a thread-pool slot running it is abandoned (its task runs on, its
        result is refused) and a new slot takes its place. Whether a slot held it."""
        with self._slots_lock:
            for i, slot in enumerate(self.slots):
                if not slot.cancel(task_id, token):
                    continue
                if isinstance(slot, Slot) and not self.fetching.is_set():
                    fresh = self._thread_slot(i)
                    self.slots[i] = fresh
                    fresh.start()
                    log.info("task=%s cancelled; its thread is abandoned and slot %d"
                             " replaced on worker=%s", task_id, i, self.id)
                return True
        return False

    def make_way(self) -> None:
        """A task ran past the prefetch horizon: tasks prefetched behind it would wait for
        it. Hand them back and tell the dispatcher at once (the heartbeat counts the long
        run), so that it leases them to a worker with a free slot and prefetches here only
        for the other slots."""
        if self.draining:
            return
        # The heartbeat goes first, so that the dispatcher does not lease the tasks handed
        # back to this worker again.
        told = self.holding.runs_short_tasks()
        if told:
            self._beat(now=True)
        if self.hand_back(unstarted=False, why="prefetched behind a long run") and not told:
            self._beat(now=True)

    def sweep_behind_long_runs(self) -> int:
        """Long runs hold every slot: hand back what the dispatcher leased here before it
        heard of them (the marker calls this about once a second meanwhile)."""
        if self.draining:
            return 0
        return self.hand_back(unstarted=False, why="leased behind long runs")

    def hand_back(self, unstarted: bool = True, why: str = "unstarted") -> int:
        """Return to their queues the tasks waiting in the inbox and, with ``unstarted``,
        those taken but not started. An entry a slot takes meanwhile stays leased."""
        fetched = self.inbox.take_ready() if unstarted else []
        n, tasks = 0, []
        for p, scripts in enumerate(self.parts):  # each partition's in its own
            entries = as_bytes_list(self.client.lrange(scripts.keys.inbox(self.id), 0, -1))
            waiting = [lease for lease in map(signals.parse_lease, entries) if lease is not None]
            part = [LeasedTask(lease.task_id, lease.queue, lease.token, inbox_entry=lease.raw)
                    for lease in waiting]
            part += [LeasedTask(lease.task_id, lease.queue, lease.token) for lease in fetched
                     if lease.partition == p]
            if part:
                n += scripts.release(self.id, part)
                tasks += part
        if not tasks:
            return 0
        for lease in fetched:
            self.holding.release(lease.task_id)
        if n:
            log.info("worker=%s handed back %d tasks (%s): %s", self.id, n, why,
                     ",".join(t.task_id for t in tasks[:10]))
        return n
