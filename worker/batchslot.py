"""The slot of a pool child: it takes its leases in batches and acknowledges them together.

Alone in its process, a pool child has no other slot to share an ack thread with, so a
lease costs it a round trip of its own. When its tasks are short (their run times justify
prefetching), it takes as many leases at once as the dispatcher prefetches per slot (the
depth each lease carries, ``Lease.depth``: common/prefetch.py), runs them one after
another and acknowledges them in one call, which takes the next batch: one round trip per
batch, not per task. A result waits at most ``ACK_WITHIN`` for its batch's call. A
child taking one lease at a time sends its ack with its next blocking fetch behind it
(``Inbox.send_before_fetch``): one round trip per task, not an ack and then a fetch.

What the batch holds stays known:

- The child's record lists every lease of the batch for its supervisor, which hands back
  those a dead child did not finish, and never lets the reconciler take one in use.
- Redis lists the leases after the batch's first under this child's field of
  ``ahead:<worker>`` (the ack script writes it). When the whole worker dies, the reaper
  counts a loss for the tasks it had started (the poison count), but cannot tell which of
  the batch's others ran: they become suspects. A suspect's lease token ends in "!", and a
  child tells Redis when it starts one (a note, whose reply it does not wait for), so that
  a task that kills its worker from anywhere in a batch is counted from its second kill
  on, and tasks that merely shared its batch are never counted. Telling every start would
  cost a command per task.
- When a run passes the long-run horizon, the supervisor asks the child to make way: its
  control thread hands back the leases not started and stores the results waiting for
  the call, so that neither waits behind the long run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis
from balancer.common import signals
from balancer.common.keys import Keys
from balancer.common.retry import persist
from balancer.common.scripts import LeasedTask
from balancer.common.signals import Lease
from balancer.worker.ack import Acker, Finished
from balancer.worker.holding import Holding
from balancer.worker.inbox import Inbox
from balancer.worker.pool import Runner
from balancer.worker.retire import Retirement
from balancer.worker.slot import Slot

log = logging.getLogger("worker")

# A finished task's result waits at most this long for the rest of its batch.
ACK_WITHIN = 0.005


class BatchSlot(Slot):
    def __init__(self, worker_id: str, client: redis.Redis, keys: Keys, runner: Runner,
                 inbox: Inbox, acker: Acker, holding: Holding, stopping: threading.Event,
                 ahead_field: str, ackers: Sequence[Acker] = (),
                 retirement: Retirement | None = None,
                 on_retire: Callable[[str], None] | None = None) -> None:
        super().__init__(0, worker_id, client, keys, runner, inbox, acker, holding, stopping,
                         ackers)
        self.ahead_field = ahead_field  # this child's field of ahead:<worker>
        self.retirement = retirement  # when this child makes way for a fresh one
        self.on_retire = on_retire  # told why, before the child stops fetching
        self._retire_why: str | None = None
        self._partition = 0  # of the last lease run: where the next batch is taken
        self._lock = threading.Lock()
        # Held while results are stored, by the slot's thread (_store) or by the control
        # thread (make_way, a run gone long): the slot, leaving (make_way in run's finally),
        # waits for a store the other thread began, or the process would exit under it,
        # its results unstored and its leases handed back as if it had died.
        self._storing = threading.RLock()
        self._pending: list[Finished] = []  # finished, not stored yet
        self._oldest = 0.0  # when the first of them finished
        self._ahead: list[Lease] = []  # the batch after its first, as Redis lists it
        self._depth = 1  # the prefetch depth of the last lease run

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                lease = self.inbox.next()
                if lease is None:
                    continue
                self._starting(lease)
                finished = self.run_one(lease)
                self._depth, self._partition = lease.depth, lease.partition
                if self.retirement is not None and self._retire_why is None:
                    self._retire_why = self.retirement.after_task()
                with self._lock:
                    if not self._pending:
                        self._oldest = time.monotonic()
                    self._pending.append(finished)
                    more = self.inbox.has_ready()
                    if more and time.monotonic() - self._oldest < ACK_WITHIN:
                        continue
                if self._retire_why is not None and not more:  # its batch run: it leaves
                    self._retire(self._retire_why)
                take = 0 if more or self.stopping.is_set() else self._batch_size()
                self._store(take)
        finally:
            self.inbox.settle_ahead()
            self.make_way()

    def _batch_size(self) -> int:
        """How many leases to take next: the prefetch the last lease run was leased with.
        The dispatcher decided it (run times and priorities), so the child never prefetches
        what the dispatcher would not (a queue whose workers serve a higher one)), nor
        past the tasks it may still run before it retires."""
        if self.retirement is not None:
            return self.retirement.left(self._depth)
        return self._depth

    def _retire(self, why: str) -> None:
        """Stop fetching (what is pending is stored, without taking more), having told
        the supervisor why."""
        if self.on_retire is not None:
            self.on_retire(why)
        self.stopping.set()

    def _store(self, take: int) -> None:
        """Store the results waiting; with ``take``, take the next batch in the same call."""
        with self._storing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            p = self._partition
            if len(self.ackers) > 1:  # each partition's results in its own; the take in p's
                for other in {f.lease.partition for f in batch} - {p}:
                    self.ackers[other].store([f for f in batch if f.lease.partition == other])
                batch = [f for f in batch if f.lease.partition == p]
            # Taking one: the ack goes with the blocking fetch of the next lease, one round
            # trip (a batch is taken by the ack itself, which records it as ahead).
            one = take == 1 and len(self.ackers) == 1
            before_fetch = self.inbox.send_before_fetch if one else None
            taken = self.ackers[p].store(batch, take, self.ahead_field if take > 1 else "",
                                         before_fetch)
            if taken:
                leases = self.inbox.deliver(taken, p)
                with self._lock:
                    self._ahead = leases[1:]

    def _starting(self, lease: Lease) -> None:
        """Tell Redis that a suspect taken ahead starts now (the reply is read later)."""
        if not lease.suspect:
            return
        with self._lock:
            ids = [held.task_id for held in self._ahead]
            if lease.task_id not in ids:
                return
            self._ahead = self._ahead[ids.index(lease.task_id) + 1:]
            rest = signals.ahead_value(self._ahead)
        self.ackers[lease.partition].scripts.note_ahead(self.worker_id, self.ahead_field, rest)

    def make_way(self) -> None:
        """Hand back the leases taken and not started, and store the results waiting (a
        run went long, or the child stops). Called from any thread. Redis's list of the
        batch stays: the run going on is on it, and what was handed back is no lease any
        more."""
        with self._storing:
            leases = self.inbox.take_ready()
            with self._lock:
                batch, self._pending = self._pending, []
            for p, acker in enumerate(self.ackers):
                mine = [f for f in batch if f.lease.partition == p]
                if mine:
                    acker.store(mine)
            if leases:
                n = 0
                for p, acker in enumerate(self.ackers):
                    tasks = [LeasedTask(lease.task_id, lease.queue, lease.token)
                             for lease in leases if lease.partition == p]
                    if tasks:
                        n += persist("be handed back", tasks[0].task_id,
                                     lambda: acker.scripts.release(  # noqa: B023
                                         self.worker_id, tasks))  # noqa: B023
                for lease in leases:
                    self.holding.release(lease.task_id)
                log.info("worker=%s handed back %d tasks taken ahead: %s", self.worker_id, n,
                         ",".join(lease.task_id for lease in leases[:10]))
