"""The dispatcher's in-memory picture of the workers, kept apart from the loop doing I/O.

``ClusterView`` owns the worker views: every change to one goes through a method here,
which tells the index of workers with room (``rooms.RoomIndex``) in the same breath.
"""

from __future__ import annotations

import logging

from balancer.common import protocol
from balancer.common.codec import CodecError
from balancer.common.models import WorkerInfo
from balancer.common.settings import Settings
from balancer.rooms import RoomIndex
from balancer.scheduling import ALL_QUEUES, WorkerView, offer_basis

log = logging.getLogger("balancer.dispatcher")


# A worker that says it beats slower is given at most this many worker timeouts: a dead
# worker (or one a writer forged, saying it beats once an hour) must not hold its leases
# for long.
SILENCE_MAX = 10


def allowed_silence(beat_s: float, worker_timeout: float, heartbeat_interval: float) -> float:
    """How long a worker that beats every ``beat_s`` may go unheard before it is called
    dead: the worker timeout, or as many of the worker's beats as it holds of ours, for one
    that beats slower, up to SILENCE_MAX timeouts. A worker started with another
    BALANCER_HEARTBEAT_INTERVAL than its dispatcher's was called dead between any two
    beats, and the tasks it ran ran again and again until quarantined. (Celery's events
    likewise read a worker's own heartbeat frequency.)"""
    return min(max(worker_timeout, beat_s * worker_timeout / heartbeat_interval),
               SILENCE_MAX * worker_timeout)


class ClusterView:
    def __init__(self, worker_timeout: float = Settings.worker_timeout,
                 heartbeat_interval: float = Settings.heartbeat_interval) -> None:
        # A worker is dead after this many seconds of silence, or as many of its own beats
        # as they are of ours when it beats slower (``silence``).
        self.worker_timeout = worker_timeout
        self.heartbeat_interval = heartbeat_interval
        self.workers: dict[str, WorkerView] = {}
        self.rooms = RoomIndex(self.workers)
        self.durations: dict[str, dict[str, float]] = {}  # queue -> worker -> mean ms
        # Per queue, the sum of ``durations`` and the changes since it was last summed
        # afresh: a mean per round costs O(1), and rounding errors do not pile up.
        self._sums: dict[str, tuple[float, int]] = {}
        # Bumped when what the standing offers weigh changed (``scheduling.offer_basis``: a
        # worker came or went, its queues, slots, long runs or host load in half steps):
        # offers are recomputed only then, which weighs every worker.
        self.version = 0
        # The queues whose mean run time changed since the dispatcher last weighed their
        # prefetch depth (DispatchState.depths takes them): one worker's beat recomputes
        # the depths of the queues it reported, not of every queue.
        self.means_changed: set[str] = set()

    def heartbeat(self, worker_id: str, leased: int, blob: bytes, now: float) -> WorkerView | None:
        """Apply a heartbeat; returns the view of a worker seen for the first time."""
        try:
            info = WorkerInfo.from_blob(blob)
        except (CodecError, TypeError, ValueError) as exc:
            log.warning("unreadable heartbeat from worker=%s: %s", worker_id, exc)
            return None
        view = self.workers.get(worker_id)
        new = view is None
        if view is None:
            view = self.workers[worker_id] = WorkerView(worker_id, frozenset(), 0)
        offered = None if new else offer_basis(view)
        foreign = protocol.other_release(info.protocol)
        if foreign and view.info.get("protocol") != info.protocol:
            log.warning(
                "worker=%s runs release %s (protocol %d), this dispatcher release %s"
                " (protocol %d): it gets no tasks, as it would misread them; run one"
                " release on the whole cluster (README, \"Upgrading\")", worker_id,
                info.release or "older", info.protocol, protocol.release(), protocol.VERSION)
        # A worker of another release serves nothing here: never leased to, never offered.
        view.queues = frozenset() if foreign else frozenset(info.queues)
        view.capacity = info.capacity
        view.leased = leased
        view.long_running = info.long_running
        view.cpu = info.pressure
        view.memory = info.memory
        view.last_seen = now
        if info.beat_s != view.beat_s:
            view.beat_s = info.beat_s
            silence = self.silence(view)
            if silence > self.worker_timeout:
                log.warning("worker=%s beats every %gs, this dispatcher every %gs with a worker"
                            " timeout of %gs: it is called dead after %gs of silence%s; give"
                            " the cluster one BALANCER_HEARTBEAT_INTERVAL and"
                            " BALANCER_WORKER_TIMEOUT", worker_id, info.beat_s,
                            self.heartbeat_interval, self.worker_timeout, silence,
                            " (less than its beats take: it will be called dead between"
                            " them)" if silence <= info.beat_s else "")
        view.info = {"host": info.host, "pid": info.pid, "pool": info.pool,
                     "protocol": info.protocol, "other_release": foreign,
                     "queues": info.queues}
        if offer_basis(view) != offered:
            self.version += 1
        self.rooms.put(view)
        for queue, ms in info.durations.items():
            self._duration(queue, worker_id, float(ms))
        return view if new else None

    def of_other_releases(self, queue: str) -> list[str]:
        """The workers of another release that would serve ``queue`` (they get no tasks
        here: ``heartbeat``)."""
        out = []
        for w in self.workers.values():
            queues = w.info.get("queues")
            if (w.info.get("other_release") is True
                    and isinstance(queues, tuple) and (queue in queues or ALL_QUEUES in queues)):
                out.append(w.id)
        return sorted(out)

    def add(self, view: WorkerView) -> None:
        """A worker known only by its leases (its info unreadable or gone): it serves
        nothing until it beats."""
        self.version += 1
        self.workers[view.id] = view
        self.rooms.put(view)

    def acked(self, worker_id: str, leased: int) -> None:
        """The worker finished tasks and has ``leased`` leases in Redis now. The count may
        predate a batch leased since: too low, it costs an assign that finds no room (the
        script counts for itself and answers the truth)."""
        view = self.workers.get(worker_id)
        if view is not None:
            view.leased = leased
            view.long_running = min(view.long_running, leased)  # a long run may have ended
            self.rooms.put(view)

    def offer_taken(self, worker_id: str, leased: int) -> None:
        """A submit leased tasks with deadlines to the worker by its standing offer: it has
        ``leased`` leases now. (Other offered leases are not told: the next ack tells the
        count.) Named after the signal, not ``holds``: "held" is the worker's word for
        what it took out of its inbox, which the dispatcher never sees."""
        self.assigned(worker_id, leased)

    def assigned(self, worker_id: str, held: int) -> None:
        """A lease script answered that the worker holds ``held`` leases now."""
        view = self.workers.get(worker_id)
        if view is not None:
            view.leased = held
            self.rooms.put(view)

    def mean_duration(self, queue: str) -> float | None:
        """Mean recent run time of the queue's tasks across workers, None if unknown."""
        seen = self.durations.get(queue)
        if not seen:
            return None
        total, changes = self._sums.get(queue, (0.0, 0))
        if changes > len(seen):
            total = sum(seen.values())
            self._sums[queue] = (total, 0)
        return total / len(seen)

    def _duration(self, queue: str, worker_id: str, ms: float | None) -> None:
        """Set (None: forget) a worker's mean run time of the queue's tasks."""
        seen = self.durations.setdefault(queue, {})
        old = seen.pop(worker_id, None) if ms is None else seen.get(worker_id)
        if ms is not None:
            seen[worker_id] = ms
        if not seen:
            self._sums.pop(queue, None)
        elif old != ms:
            total, changes = self._sums.get(queue, (0.0, 0))
            self._sums[queue] = (total + (ms or 0.0) - (old or 0.0), changes + 1)
        if old != ms:
            self.means_changed.add(queue)

    def silence(self, worker: WorkerView) -> float:
        return allowed_silence(worker.beat_s, self.worker_timeout, self.heartbeat_interval)

    def overdue(self, now: float) -> list[WorkerView]:
        """Workers silent for longer than ``silence``: dead, unless a light beat (which
        sends no signal) dated them since."""
        return [w for w in self.workers.values() if now - w.last_seen > self.silence(w)]

    def forget(self, worker_id: str) -> None:
        self.version += 1
        self.workers.pop(worker_id, None)
        self.rooms.drop(worker_id)
        for queue, per_worker in self.durations.items():
            if worker_id in per_worker:
                self._duration(queue, worker_id, None)

