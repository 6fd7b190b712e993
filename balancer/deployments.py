"""Prefect 2/3's deployments of a @flow function: what ``flow.serve(...)`` and
``flow.to_deployment(...)`` make, and how any client asks one for a run.

    if __name__ == "__main__":
        etl.serve(name="nightly", cron="0 2 * * *", parameters={"day": "today"})

    run_deployment("etl/nightly", parameters={"day": "2026-12-01"})   # from anywhere

A deployment is named ``<flow name>/<deployment name>``, as Prefect names it. It lives in
the process that serves it (balancer/serving.py): the flow function is that process's
code. A run asked with ``run_deployment`` (or ``balancer deployment run``) waits in the
deployment's list in Redis until a serve process takes it; its flow run id is chosen by
the asker, so that it can wait on the run from the start. With signing keys
(``BALANCER_SIGNING_KEYS``), a serve process runs only requests signed with one of them:
whoever can write to Redis could otherwise run the flow with parameters of their choice.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis

from balancer.common import codec, signing
from balancer.common.codec import CodecError
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_dict, as_opt_bytes
from balancer.schedules import CronClock, IntervalClock, Schedule, ScheduleError

if TYPE_CHECKING:
    from balancer.flowfn import FlowFunction

log = logging.getLogger("balancer.client")

NAME_LIMIT = 200  # characters of a deployment's full name (it is part of Redis keys)
# A serve process beats every 5 s (balancer/serving.py); one not heard of for this long
# serves no more.
GONE_AFTER_MS = 15_000
SCHEDULED = "scheduled"  # a run asked for, not yet taken by a serve process


class DeploymentError(ValueError):
    """A deployment that cannot be made or asked for: a bad name, schedule or parameter."""


@dataclass(frozen=True)
class Deployment:
    """A flow function served under a name, on a schedule or not, with default
    parameters (Prefect's ``RunnerDeployment``)."""

    flow: FlowFunction
    name: str
    schedule: Schedule | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    paused: bool = False  # served, its schedule not fired (runs asked for still run)
    description: str | None = None
    tags: tuple[str, ...] = ()
    version: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow.name}/{self.name}"

    def about(self) -> dict[str, Any]:
        """Its description, tags and version, those given."""
        given = {"description": self.description, "tags": list(self.tags),
                 "version": self.version}
        return {k: v for k, v in given.items() if v}

    def describe(self) -> str:
        if self.schedule is None:
            return "no schedule"
        return ("paused: " if self.paused else "") + self.schedule.describe()


def make(flow: FlowFunction, name: str | None = None, *, interval: Any = None,
         cron: Any = None, rrule: Any = None, schedule: Any = None, schedules: Any = None,
         paused: bool | None = None, parameters: Mapping[str, Any] | None = None,
         description: str | None = None, tags: Iterable[str] | None = None,
         version: str | None = None, **unsupported: Any) -> Deployment:
    """``flow.to_deployment(...)``: checked here, before anything runs."""
    name = flow.name if name is None else name
    owner = f"deployment {flow.name}/{name}"
    if unsupported:
        raise DeploymentError(f"{owner}: {', '.join(sorted(unsupported))} not taken here (work"
                              " pools, images and the like are Prefect server's; a deployment"
                              " here is served by the process that calls serve)")
    check_name(f"{flow.name}/{name}")
    if rrule is not None:
        raise DeploymentError(f"{owner}: rrule schedules are not taken; give cron= or interval=")
    given = [s for s in (interval, cron, schedule, schedules) if s is not None]
    if len(given) > 1:
        raise DeploymentError(f"{owner}: give one of interval, cron, schedule or schedules")
    try:
        built = _schedule(interval, cron, schedule, schedules)
    except ScheduleError as exc:
        raise DeploymentError(f"{owner}: {exc}") from None
    values = dict(parameters or {})
    try:
        codec.pack(values)
    except CodecError as exc:
        raise DeploymentError(f"{owner}: its parameters must travel as msgpack: {exc}") from None
    _check_parameters(owner, flow, values)
    if paused is not None and not isinstance(paused, bool):
        raise DeploymentError(f"{owner}: paused must be True or False, got {paused!r}")
    tag_list = (tags,) if isinstance(tags, str) else tuple(tags or ())
    return Deployment(flow, name, built, values, bool(paused), description,
                      tuple(str(t) for t in tag_list), version)


def check_name(full_name: str) -> None:
    if (not isinstance(full_name, str) or not 0 < len(full_name) <= NAME_LIMIT
            or full_name.count("/") != 1 or "|" in full_name
            or not full_name.isprintable() or "" in full_name.split("/")):
        raise DeploymentError(f"a deployment is named 'flow-name/deployment-name' (at most"
                              f" {NAME_LIMIT} printable characters, no '|'), got {full_name!r}")


def _schedule(interval: Any, cron: Any, schedule: Any, schedules: Any) -> Schedule | None:
    if schedule is not None or schedules is not None:
        items = [schedule] if schedule is not None else list(schedules)
        clocks = []
        for item in items:
            if isinstance(item, Schedule):
                clocks.extend(item.clocks)
            else:
                raise ScheduleError("schedule(s) must be balancer.schedules' Schedule"
                                    " (CronSchedule, IntervalSchedule), or give cron= or"
                                    f" interval=; got {type(item).__name__}")
        return Schedule(clocks)
    if cron is not None:
        crons = [cron] if isinstance(cron, str) else list(cron)
        return Schedule([CronClock(c) for c in crons])
    if interval is not None:
        intervals = list(interval) if isinstance(interval, (list, tuple)) else [interval]
        return Schedule([IntervalClock(_seconds(i)) for i in intervals])
    return None


def _seconds(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScheduleError(f"interval must be seconds or a timedelta, got {value!r}")
    return timedelta(seconds=value)


def _check_parameters(owner: str, flow: FlowFunction, values: Mapping[str, Any]) -> None:
    """Every parameter given is one the flow function takes (any, with ``**kwargs``)."""
    params = inspect.signature(flow.fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    names = [p.name for p in params if p.kind is not p.VAR_POSITIONAL]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise DeploymentError(f"{owner}: flow {flow.name!r} takes no parameter"
                              f" {', '.join(unknown)} (it takes {', '.join(names) or 'none'})")


# -- asking for a run ------------------------------------------------------------------


def request_message(full_name: str, run_id: str, parameters: Mapping[str, Any],
                    asked_ms: int) -> bytes:
    """What a run request's signature covers."""
    return codec.pack([full_name, run_id, dict(parameters), asked_ms])


@dataclass(frozen=True)
class Request:
    run_id: str
    parameters: dict[str, Any]
    asked_ms: int
    sig: str = ""

    def encode(self) -> bytes:
        return codec.pack([self.run_id, self.parameters, self.asked_ms, self.sig])

    @classmethod
    def decode(cls, raw: bytes) -> Request:
        """Raise ValueError when ``raw`` is not one (written by someone else)."""
        try:
            run_id, parameters, asked_ms, sig = codec.unpack(raw)
            if not isinstance(parameters, dict) or not all(isinstance(k, str)
                                                           for k in parameters):
                raise ValueError("parameters are not a map of names")
            return cls(str(run_id), parameters, int(asked_ms), str(sig))
        except (CodecError, TypeError, ValueError) as exc:
            raise ValueError(f"not a run request: {exc}") from None


class DeploymentRun:
    """A run asked of a deployment (Prefect's ``run_deployment`` returns its FlowRun):
    ``.id``, ``.state`` ("scheduled" until a serve process takes it), ``.wait()``, and,
    once it began, ``.flow_run()``, the handle ``FlowRun.attach`` gives."""

    def __init__(self, client: redis.Redis, keys: Keys, deployment: str, run_id: str) -> None:
        self.client = client
        self.keys = keys
        self.deployment = deployment
        self.id = run_id

    @property
    def state(self) -> str:
        from balancer.common import partitions

        keys = partitions.flow_keys(self.keys, self.id)
        raw = as_opt_bytes(self.client.hget(keys.flow(self.id), "state"))
        return raw.decode() if raw is not None else SCHEDULED

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run finishes (a serve process must take it first); its final
        state. TimeoutError after ``timeout`` seconds (None: wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while self.state == SCHEDULED:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"deployment {self.deployment}: run {self.id} was not taken"
                                   f" by a serve process within {timeout}s (is one serving"
                                   " it? `balancer deployment ls`)")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        state: str = self.flow_run().wait(left)
        return state

    def flow_run(self) -> Any:
        from balancer.run import FlowRun

        return FlowRun.attach(self.id, self.client, namespace=self.keys.namespace)

    def __repr__(self) -> str:
        return f"<DeploymentRun {self.deployment} {self.id}>"


def run_deployment(name: str, parameters: Mapping[str, Any] | None = None,
                   timeout: float | None = None, *, client: redis.Redis | None = None,
                   redis_url: str | None = None, namespace: str | None = None
                   ) -> DeploymentRun:
    """Ask the deployment ``name`` ("flow-name/deployment-name") for a run with these
    parameters (over its own), as Prefect's ``run_deployment``; a serve process of it
    takes the run. Waits until the run finishes unless ``timeout`` (seconds; 0 returns at
    once). The cluster: ``client``, else ``redis_url``, else ``BALANCER_REDIS_URL``."""
    from balancer.client import resolve_url, talking
    from balancer.dynamic import new_run_id
    from balancer.submit import redis_now_ms

    check_name(name)
    values = dict(parameters or {})
    try:
        codec.pack(values)
    except CodecError as exc:
        raise DeploymentError(f"deployment {name}: its parameters must travel as msgpack:"
                              f" {exc}") from None
    conn, settings = resolve_url(client, redis_url, namespace)
    keys = Keys(settings.namespace)
    with talking(conn):
        run_id = new_run_id(conn, keys)
        asked_ms = redis_now_ms(conn, keys, settings)
        signer = signing.signer(settings.signing_keys)
        sig = signer.sign(request_message(name, run_id, values, asked_ms)) if signer else ""
        conn.rpush(keys.deployment_runs(name), Request(run_id, values, asked_ms, sig).encode())
        if not any(s.deployment == name and asked_ms - s.seen_ms < GONE_AFTER_MS
                   for s in beats(conn, keys)):
            log.warning("deployment %s: no serve process serves it now (balancer deployment"
                        " ls); run %s waits for one", name, run_id)
        run = DeploymentRun(conn, keys, name, run_id)
        if timeout is None or timeout > 0:
            run.wait(timeout)
    return run


# -- what is served ----------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One serve process's beat about one deployment (``deployments``)."""

    deployment: str
    server: str
    flow: str
    schedule: str
    parameters: dict[str, Any]
    host: str
    pid: int
    seen_ms: int
    next_ms: int | None = None
    # The deployment's description, tags and version, as serve was given them.
    about: dict[str, Any] = field(default_factory=dict)
    waiting: int = 0  # runs asked for and not taken, at the beat

    def encode(self) -> bytes:
        return codec.pack([self.flow, self.schedule, self.parameters, self.host, self.pid,
                           self.seen_ms, self.next_ms, self.about])

    @classmethod
    def decode(cls, field_: bytes, raw: bytes) -> Served:
        deployment, _, server = field_.decode(errors="replace").partition("|")
        try:
            flow, schedule, parameters, host, pid, seen_ms, next_ms, about = codec.unpack(raw)
            return cls(deployment, server, str(flow), str(schedule), dict(parameters),
                       str(host), int(pid), int(seen_ms),
                       None if next_ms is None else int(next_ms), dict(about))
        except (CodecError, TypeError, ValueError) as exc:
            raise ValueError(f"not a deployment beat: {exc}") from None


def beats(client: redis.Redis, keys: Keys) -> list[Served]:
    """What every serve process said it serves, by deployment and process. Entries that
    are not beats (written by someone else) are left out."""
    out = []
    for name, raw in sorted(as_bytes_dict(client.hgetall(keys.deployments)).items()):
        try:
            out.append(Served.decode(name, raw))
        except ValueError:
            continue
    return out


def served(client: redis.Redis, keys: Keys) -> list[Served]:
    """``beats``, each with how many runs wait for its deployment (one more round trip)."""
    found = beats(client, keys)
    pipe = client.pipeline(transaction=False)
    for item in found:
        pipe.llen(keys.deployment_runs(item.deployment))
    return [replace(item, waiting=int(n)) for item, n in zip(found, pipe.execute(), strict=True)]
