"""One frozen record of every tunable, built from defaults, ``BALANCER_*`` variables and flags.

Unknown names are errors, never silently dropped: a misspelt ``BALANCER_HEARTBEAT_INTERVALL``
would otherwise leave a cluster running on defaults nobody chose.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "BALANCER_"
# Set by a worker in its pool processes (worker/child.py), for code that must know where it
# runs; a marker, not a setting, so from_env passes it over: code in such a process (a
# task submitting another task) reads its settings as anywhere else.
WORKER_CHILD_ENV = "BALANCER_WORKER_CHILD"
# Set by a worker for its pool's forkserver: the --import modules it imports once, before
# it forks the children (worker/preload.py). A marker too, passed over by from_env.
POOL_IMPORTS_ENV = "BALANCER_POOL_IMPORTS"
_MARKERS = (WORKER_CHILD_ENV, POOL_IMPORTS_ENV)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MIN_KEY_LENGTH = 16  # of a signing key


class SettingsError(ValueError):
    """A setting is unknown or its value cannot be read."""


@dataclass(frozen=True)
class Settings:
    # Where the cluster lives. None means "not configured": client code then runs flows on
    # the embedded in-process cluster, while `balancer serve` and `worker start` use
    # DEFAULT_REDIS_URL. Left out of the repr: it may hold a password.
    redis_url: str | None = field(default=None, repr=False)
    namespace: str = "balancer"
    heartbeat_interval: float = 1.0
    # A worker silent for this long is declared dead and its tasks are re-queued.
    worker_timeout: float = 3.0
    result_ttl: float = 7 * 24 * 3600.0
    max_payload_bytes: int = 1 << 20
    # Times a task may be lost with its worker before it is quarantined.
    poison_threshold: int = 3
    # Seconds of waiting that raise a queued task (or a queue's head) by one priority level.
    aging_seconds: float = 60.0
    leader_ttl: float = 5.0
    # Longest the dispatcher sleeps when nothing signals it (timers, reaping).
    dispatch_tick: float = 0.5
    # Grace period for running tasks on SIGTERM.
    shutdown_grace: float = 30.0
    # A pool child is replaced by a fresh one after this many tasks, or once its resident
    # memory passes this many MB after a task (0: never; worker/retire.py). Process pool
    # only: a thread pool's slots share one process.
    max_tasks_per_child: int = 0
    max_memory_per_child: int = 0
    # A process pool's forkserver imports the --import modules once, before it forks the
    # children, which then share their memory instead of each importing them again (what
    # a task module loads at import, a model or a large library, is held once). Off: each
    # child imports them itself, after it is forked (for modules that start threads or
    # open connections at import, which a fork does not carry over).
    preload_tasks: bool = True
    # How long past its timeout a task may stay unacknowledged before the dispatcher fails
    # it itself (a backstop for a worker that keeps heartbeating but lost the task).
    timeout_grace: float = 10.0
    # Packages (``myapp``) and folders (``/srv/jobs``), comma-separated, whose @task
    # functions workers may run besides those of --import and of their own folder.
    allowed_tasks: str = ""
    # Secrets, comma-separated, that clients sign task specs with and workers verify
    # (common/signing.py). Empty: nothing is signed. Kept out of the record's repr.
    signing_keys: str = field(default="", repr=False)
    # What a blocking flow.run() reports while it waits: auto (a bar on a terminal, plain
    # lines elsewhere), bar, lines, or off.
    progress: str = "auto"
    # How serve and worker processes (pool children too) log: text or json lines.
    log_format: str = "text"
    # Durability across a failover: a submit and an acknowledgement wait until this many
    # replicas hold them (Redis WAIT), up to replica_timeout seconds. 0: no wait (Redis
    # replicates asynchronously, so a failover may lose the master's last writes).
    min_replicas: int = 0
    replica_timeout: float = 1.0
    # Most children one mapped call may expand into (t.map): past it, the map fails with
    # a MapError saying so, instead of writing millions of records.
    max_map_children: int = 100_000
    # The events stream (common/events.py) keeps about this many entries (XADD MAXLEN ~).
    events_max: int = 10000
    # Per-task events (started, completed, failed, ...; dispatch): on or off. Off saves
    # one write per script call that settles tasks; cluster events are always written.
    task_events: str = "on"
    # /metrics labels at most this many task names; runs of any other are counted under
    # task="(other)" (a client naming a copy per call would make a series per call).
    metrics_task_labels: int = 500
    # The token the dashboard's actions (pause, retry, ...) require; empty: read-only.
    # Kept out of the record's repr.
    dashboard_token: str = field(default="", repr=False)
    # A schedule's due time older than this (seconds) when the leader comes to it is
    # skipped, and logged, rather than run late (balancer/schedules.py).
    schedule_catchup: float = 300.0
    # Partitions of the namespace (common/partitions.py): each its own hash tag and leader
    # lease. Read by `balancer serve`, which stores it; workers and clients read the
    # stored count. 1: one partition, the namespace as it was before partitions.
    partitions: int = 1
    # A concurrency limit's slots (balancer/concurrency.py) are leased for this long and
    # renewed each third of it while held: a holder that dies frees them when it ends.
    concurrency_lease: float = 30.0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Defaults, then ``BALANCER_*`` variables, then explicit overrides (None = not given)."""
        env = os.environ if env is None else env
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in env.items():
            if not key.startswith(ENV_PREFIX) or key in _MARKERS:
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name not in known:
                raise SettingsError(
                    f"unknown setting {key}; known: "
                    + ", ".join(ENV_PREFIX + n.upper() for n in sorted(known))
                )
            values[name] = _coerce(key, known[name].type, raw)
        for name, value in overrides.items():
            if name not in known:
                raise SettingsError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"{f.name} must be a finite number, got {value}")
        for name in ("heartbeat_interval", "worker_timeout", "leader_ttl", "dispatch_tick"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("timeout_grace", "shutdown_grace", "aging_seconds"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.result_ttl < 1:
            # Redis deletes a key given a TTL of 0 at once: every result, and the record of
            # every flow that ends, would go before a dependent or a client could read it
            # (and 0 means "keep for ever" to Celery users).
            raise SettingsError(
                f"result_ttl must be at least 1 second, got {self.result_ttl}: it is how long"
                " results and the records of ended runs are kept, which dependents and"
                " waiting clients read (for longer, give a larger number of seconds)")
        if self.concurrency_lease < 0.3:
            raise SettingsError(
                f"concurrency_lease must be at least 0.3 seconds, got {self.concurrency_lease}:"
                " a holder renews its slots each third of it")
        if self.schedule_catchup < 1:
            raise SettingsError(f"schedule_catchup must be at least 1 second, got"
                                f" {self.schedule_catchup}")
        if self.worker_timeout < self.heartbeat_interval:
            raise SettingsError(
                f"worker_timeout ({self.worker_timeout}s) must be at least "
                f"heartbeat_interval ({self.heartbeat_interval}s)"
            )
        if self.min_replicas < 0:
            raise SettingsError(f"min_replicas must not be negative, got {self.min_replicas}")
        if self.replica_timeout <= 0:
            raise SettingsError(f"replica_timeout must be positive, got {self.replica_timeout}")
        if self.max_map_children < 0:
            raise SettingsError("max_map_children must not be negative")
        for name in ("max_tasks_per_child", "max_memory_per_child"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative (0: no bound), got"
                                    f" {getattr(self, name)}")
        if self.events_max < 1:
            raise SettingsError(f"events_max must be at least 1, got {self.events_max}")
        if self.metrics_task_labels < 0:
            raise SettingsError("metrics_task_labels must not be negative, got"
                                f" {self.metrics_task_labels}")
        if self.task_events not in ("on", "off"):
            raise SettingsError(f"task_events must be on or off, got {self.task_events!r}")
        if self.dashboard_token and len(self.dashboard_token) < MIN_KEY_LENGTH:
            raise SettingsError(f"dashboard_token must be at least {MIN_KEY_LENGTH}"
                                " characters long")
        if self.partitions < 1:
            raise SettingsError(f"partitions must be at least 1, got {self.partitions}")
        if self.poison_threshold < 1:
            raise SettingsError("poison_threshold must be at least 1")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"log_format must be text or json, got {self.log_format!r}")
        if self.progress not in ("auto", "bar", "lines", "off"):
            raise SettingsError(f"progress must be auto, bar, lines or off, got"
                                f" {self.progress!r}")
        keys = [k.strip() for k in self.signing_keys.split(",") if k.strip()]
        if any(len(k) < MIN_KEY_LENGTH for k in keys):
            raise SettingsError(f"every signing key must be at least {MIN_KEY_LENGTH}"
                                " characters long")
        if not self.namespace or any(c in self.namespace for c in "{}: "):
            raise SettingsError(
                f"namespace {self.namespace!r} must be non-empty, without {{}}: or spaces")

    @property
    def server_url(self) -> str:
        """The URL a long-running process (dispatcher, worker) connects to."""
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def allowed(self) -> tuple[str, ...]:
        """``allowed_tasks`` as a list of packages and folders."""
        return tuple(e.strip() for e in self.allowed_tasks.split(",") if e.strip())

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(key: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    if kind == "bool":
        word = raw.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{key}={raw!r} is not a yes or no (1/0, true/false, on/off)")
    try:
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a {kind}") from None
    return raw
