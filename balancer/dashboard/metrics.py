"""Prometheus metrics of a cluster, served at ``/metrics`` by ``balancer dashboard``.

Two sources, as Flower does for Celery:

- gauges are read from Redis at scrape time (``ClusterCollector``): queue depths and the
  age of each queue's head, workers' leases, running tasks and load, the leader;
- counters and histograms are fed by tailing the events stream (``EventMetrics``): tasks
  completed, failed, retried, quarantined, their run and wait times, dispatch decisions,
  leader changes, workers reaped. They count what this process saw since it started: a
  restart starts them at 0 again (a counter reset, which ``rate()`` and ``increase()``
  handle), events written while it was down are not counted, and a scrape process that
  falls more than ``BALANCER_EVENTS_MAX`` entries behind misses the oldest.

Every metric is listed in ``METRICS`` (name, type, help); the README's table and the
Grafana dashboard's test are checked against it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from balancer import status as status_view
from balancer.common import events, partitions
from balancer.common.keys import Keys

log = logging.getLogger("balancer.dashboard")

# Seconds: from a no-op task to a long batch job.
TIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0, 1800.0)

# name -> (type, labels, help). The one list of what /metrics serves.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "balancer_queue_depth": ("gauge", ("queue",), "Ready tasks waiting in the queue."),
    "balancer_queue_ready_age_seconds": (
        "gauge", ("queue",), "How long the task at the head of the queue (the next to be"
        " handed out) has been ready; 0 for an empty queue."),
    "balancer_queue_paused": ("gauge", ("queue",), "1 if the queue is paused."),
    "balancer_queue_priority": ("gauge", ("queue",), "The queue's priority."),
    "balancer_queue_leased": (
        "gauge", ("queue",), "Tasks of a queue with a concurrency limit leased now."),
    "balancer_worker_leases": (
        "gauge", ("worker",), "Tasks leased to the worker (in its inbox or running)."),
    "balancer_worker_running": ("gauge", ("worker",), "Tasks the worker reports running."),
    "balancer_worker_stuck_threads": (
        "gauge", ("worker",), "Thread pool: task threads given up (a timeout, a cancel) that"
        " do not stop, inside a call that does not return to Python."),
    "balancer_worker_capacity": ("gauge", ("worker",), "The worker's slots."),
    "balancer_worker_load": (
        "gauge", ("worker",), "The dispatcher's load objective: leases / capacity plus host"
        " cpu pressure and memory terms (lowest gets the next task)."),
    "balancer_worker_cpu": ("gauge", ("worker",), "Use of the worker's cores, 0..1."),
    "balancer_worker_memory": ("gauge", ("worker",), "Host memory use, 0..1."),
    "balancer_worker_heartbeat_age_seconds": (
        "gauge", ("worker",), "Seconds since the worker's last heartbeat."),
    "balancer_workers": ("gauge", ("state",), "Registered workers by state (alive, silent)."),
    "balancer_leader": (
        "gauge", ("dispatcher",), "1 for the dispatcher holding the leader lease."),
    "balancer_dispatchers": ("gauge", (), "Dispatchers seen recently (leader and standbys)."),
    "balancer_dead_letters": ("gauge", (), "Quarantined tasks (balancer dlq ls)."),
    "balancer_retries_waiting": ("gauge", (), "Tasks waiting for their retry delay, or for"
                                 " the later start their run was given."),
    "balancer_set_aside": ("gauge", (), "Bad entries the dispatcher set aside."),
    "balancer_redis_eviction_risk": (
        "gauge", ("policy",), "What Redis's maxmemory-policy may delete of the cluster's"
        " keys: 0 nothing (noeviction), 1 keys with a time to live (results), 2 any key"
        " (tasks may vanish)."),
    "balancer_tasks_completed_total": (
        "counter", ("queue", "task"), "Tasks completed (seen in the events stream)."),
    "balancer_tasks_failed_total": (
        "counter", ("queue", "task"), "Tasks failed for good."),
    "balancer_tasks_retried_total": (
        "counter", ("queue", "task"), "Retries scheduled, and tasks put back after a crash."),
    "balancer_tasks_quarantined_total": ("counter", ("queue", "task"), "Tasks quarantined."),
    "balancer_tasks_cancelled_total": ("counter", ("queue", "task"), "Tasks cancelled."),
    "balancer_tasks_skipped_total": ("counter", ("queue", "task"), "Tasks that raised SKIP."),
    "balancer_task_run_seconds": (
        "histogram", ("queue",), "Run time of completed and failed tasks, started to"
        " finished."),
    "balancer_task_wait_seconds": (
        "histogram", ("queue",), "Wait of tasks that ran: from ready (queued, or a retry"
        " due) to started."),
    "balancer_dispatch_decisions_total": (
        "counter", ("queue", "via"), "Leases handed out at once to one worker, by the"
        " dispatcher or a submit taking a standing offer."),
    "balancer_tasks_dispatched_total": (
        "counter", ("queue", "via"), "Tasks leased by those decisions."),
    "balancer_flows_finished_total": ("counter", ("state",), "Flow runs finished."),
    "balancer_leader_changes_total": ("counter", (), "New leader leases taken."),
    "balancer_workers_joined_total": ("counter", (), "Workers that registered."),
    "balancer_workers_left_total": ("counter", (), "Workers that deregistered (stopped)."),
    "balancer_workers_reaped_total": ("counter", (), "Workers declared dead and reaped."),
    "balancer_events_skipped_total": (
        "counter", (), "Entries of the events stream that were not events (not counted)."),
}

_TASK_COUNTERS = {
    events.TASK_COMPLETED: "balancer_tasks_completed_total",
    events.TASK_FAILED: "balancer_tasks_failed_total",
    events.TASK_RETRIED: "balancer_tasks_retried_total",
    events.TASK_QUARANTINED: "balancer_tasks_quarantined_total",
    events.TASK_CANCELLED: "balancer_tasks_cancelled_total",
    events.TASK_SKIPPED: "balancer_tasks_skipped_total",
}
_WORKER_COUNTERS = {
    events.WORKER_JOINED: "balancer_workers_joined_total",
    events.WORKER_LEFT: "balancer_workers_left_total",
    events.WORKER_REAPED: "balancer_workers_reaped_total",
}


def _help(name: str) -> str:
    return METRICS[name][2]


def _labels(name: str) -> tuple[str, ...]:
    return METRICS[name][1]


# The task label of runs past the cap of task names (``EventMetrics.task_labels``).
OTHER_TASKS = "(other)"


class EventMetrics:
    """Counters and histograms fed with events (``observe``).

    The ``task`` label takes at most ``task_labels`` names, the first seen; runs of any
    other are counted under ``OTHER_TASKS``, said once in the log. A task's name is the
    client's to choose (``t.with_options(name=f"load-{i}")`` in a loop, or anything a
    Redis writer puts in an event): unbounded, each name would be a series of its own
    in this process's memory and in every Prometheus that scrapes it."""

    def __init__(self, registry: CollectorRegistry, task_labels: int = 500) -> None:
        self.task_labels = task_labels
        self._task_names: set[str] = set()
        self._capped = False  # a name past the cap was seen (and said)
        self.counters: dict[str, Counter] = {}
        self.histograms: dict[str, Histogram] = {}
        for name, (kind, labels, text) in METRICS.items():
            if kind == "counter":
                # prometheus_client appends _total itself.
                self.counters[name] = Counter(name.removesuffix("_total"), text, labels,
                                              registry=registry)
            elif kind == "histogram":
                self.histograms[name] = Histogram(name, text, labels, registry=registry,
                                                  buckets=TIME_BUCKETS)
        self._skipped_seen = 0

    def _count(self, name: str, *labels: str, by: float = 1) -> None:
        counter = self.counters[name]
        (counter.labels(*labels) if labels else counter).inc(by)

    def _task_label(self, name: str) -> str:
        if name in self._task_names:
            return name
        if len(self._task_names) < self.task_labels:
            self._task_names.add(name)
            return name
        if not self._capped:
            self._capped = True
            log.warning("metrics: more than %d task names seen; runs of the others are"
                        " counted under task=%r (BALANCER_METRICS_TASK_LABELS)",
                        self.task_labels, OTHER_TASKS)
        return OTHER_TASKS

    def observe(self, event: events.Event) -> None:
        kind = event.kind
        if kind in _TASK_COUNTERS:
            self._count(_TASK_COUNTERS[kind], event.queue, self._task_label(event.name))
            if kind in (events.TASK_COMPLETED, events.TASK_FAILED) and event.run_ms is not None:
                self.histograms["balancer_task_run_seconds"].labels(event.queue).observe(
                    event.run_ms / 1000)
            if kind in (events.TASK_COMPLETED, events.TASK_FAILED) and \
                    event.wait_ms is not None:
                self.histograms["balancer_task_wait_seconds"].labels(event.queue).observe(
                    event.wait_ms / 1000)
        elif kind == events.DISPATCH:
            self._count("balancer_dispatch_decisions_total", event.queue, event.via)
            self._count("balancer_tasks_dispatched_total", event.queue, event.via,
                        by=max(0, event.count or 0))
        elif kind == events.FLOW_FINISHED:
            self._count("balancer_flows_finished_total", event.state)
        elif kind == events.LEADER_CHANGED:
            self._count("balancer_leader_changes_total")
        elif kind in _WORKER_COUNTERS:
            self._count(_WORKER_COUNTERS[kind])

    def skipped(self, total: int) -> None:
        """The reader's count of entries that were not events."""
        if total > self._skipped_seen:
            self._count("balancer_events_skipped_total", by=total - self._skipped_seen)
            self._skipped_seen = total


def _gauge(name: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, _help(name), labels=_labels(name) or None)


class ClusterCollector(Collector):
    """Gauges read from Redis at each scrape (a few pipelined round trips, as `status`)."""

    def __init__(self, client: redis.Redis, keys: Keys, leader_ttl: float = 5.0) -> None:
        self.client = client
        self.keys = keys
        self.leader_ttl = leader_ttl

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected at scrape time only: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        every = partitions.every(self.client, self.keys)
        snap = status_view.gather_all(self.client, every, recent=1,
                                      leader_ttl=self.leader_ttl)
        families = {name: _gauge(name) for name, (kind, _, _) in METRICS.items()
                    if kind == "gauge"}

        def put(name: str, value: float, *labels: str) -> None:
            families[name].add_metric(list(labels), value)

        ages = head_ages_all(self.client, every, [q.name for q in snap.queues if q.ready])
        for q in snap.queues:
            put("balancer_queue_depth", q.ready, q.name)
            put("balancer_queue_ready_age_seconds", ages.get(q.name, 0.0), q.name)
            put("balancer_queue_paused", 1 if q.paused else 0, q.name)
            put("balancer_queue_priority", q.priority, q.name)
            if q.inflight is not None:
                put("balancer_queue_leased", q.inflight, q.name)
        alive = silent = 0
        for w in snap.workers:
            alive, silent = (alive + 1, silent) if w.alive else (alive, silent + 1)
            put("balancer_worker_leases", w.leased, w.id)
            put("balancer_worker_running", w.running, w.id)
            put("balancer_worker_stuck_threads", w.stuck, w.id)
            put("balancer_worker_capacity", w.capacity, w.id)
            if w.load != float("inf"):
                put("balancer_worker_load", w.load, w.id)
            put("balancer_worker_cpu", w.cpu, w.id)
            put("balancer_worker_memory", w.memory, w.id)
            put("balancer_worker_heartbeat_age_seconds", max(0.0, w.last_seen_s), w.id)
        put("balancer_workers", alive, "alive")
        put("balancer_workers", silent, "silent")
        for leader in dict.fromkeys(snap.leaders or [snap.leader]):  # one per partition
            if leader:
                put("balancer_leader", 1, leader.split("|", 1)[-1])
        put("balancer_dispatchers", len(snap.dispatchers))
        put("balancer_dead_letters", snap.dead_letters)
        put("balancer_retries_waiting", snap.delayed)
        put("balancer_set_aside", len(snap.set_aside))
        if snap.eviction is not None:  # unknown when INFO is refused: no sample
            put("balancer_redis_eviction_risk", snap.eviction.severity, snap.eviction.policy)
        yield from families.values()


def queue_head_ages(client: redis.Redis, keys: Keys, queues: list[str]) -> dict[str, float]:
    """Seconds the head task of each queue has been ready (by its ``ready`` field; a task
    without one, from before events, counts as 0)."""
    if not queues:
        return {}
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for q in queues:
        pipe.zrange(keys.queue(q), 0, 0)
    (sec, usec), *heads = pipe.execute(raise_on_error=False)
    now_ms = sec * 1000 + usec / 1000
    pipe = client.pipeline(transaction=False)
    named = [(q, h[0].decode("utf-8", "replace")) for q, h in zip(queues, heads)
             if isinstance(h, list) and h]
    for _, task_id in named:
        pipe.hget(keys.task(task_id), "ready")
    ages: dict[str, float] = {}
    for (q, _), ready in zip(named, pipe.execute(raise_on_error=False)):
        try:
            ages[q] = max(0.0, (now_ms - float(ready)) / 1000) if ready else 0.0
        except (TypeError, ValueError):
            ages[q] = 0.0
    return ages


def head_ages_all(client: redis.Redis, every: list[Keys], queues: list[str]
                  ) -> dict[str, float]:
    """``queue_head_ages`` over every partition: each queue's oldest head."""
    ages: dict[str, float] = {}
    for keys in every:
        for q, age in queue_head_ages(client, keys, queues).items():
            ages[q] = max(age, ages.get(q, 0.0))
    return ages


def registry_for(client: redis.Redis, keys: Keys, leader_ttl: float, task_labels: int = 500
                 ) -> tuple[CollectorRegistry, EventMetrics]:
    """A registry of its own (not the process-global one) with both sources. (The
    ``_created`` series of every counter are turned off, process-wide: they double the
    output and no dashboard of ours reads them.)"""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=False)
    fed = EventMetrics(registry, task_labels)
    registry.register(ClusterCollector(client, keys, leader_ttl))
    return registry, fed
