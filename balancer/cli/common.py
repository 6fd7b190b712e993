"""What every `balancer` command shares: the connection options and the open cluster."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import redis

from balancer.common import keytypes, logs, partitions, protocol
from balancer.common.connection import Unreachable, explain, reach
from balancer.common.keys import Keys
from balancer.common.printable import lines
from balancer.common.scripts import Scripts
from balancer.common.serverversion import TooOld
from balancer.common.settings import Settings, SettingsError
from balancer.common.urls import URL_HELP

NS_HELP = ("Key namespace, to run several clusters on one Redis. Default: $BALANCER_NAMESPACE"
           " or balancer.")


@dataclass(frozen=True)
class Cluster:
    settings: Settings
    keys: Keys
    client: redis.Redis
    scripts: Scripts

    @classmethod
    def open(cls, long_lived_log_level: str | None = None, **overrides: Any) -> Cluster:
        """Settings from flags and environment, and a client that has answered a PING.
        ``long_lived_log_level``, for a command that runs on (``serve``): its logging set
        up at that level, then a Redis that answers but cannot serve yet (loading its data
        after a restart) waited for, said in its log, as a worker waits."""
        try:
            settings = Settings.from_env(**overrides)
        except SettingsError as exc:
            raise click.UsageError(str(exc)) from None
        wait = None
        if long_lived_log_level is not None:
            logs.setup(long_lived_log_level, settings.log_format)
            wait = logging.getLogger("balancer")
        try:
            client = reach(settings.server_url, wait)
        except (Unreachable, TooOld) as exc:  # one line, the URL redacted
            raise click.ClickException(str(exc)) from None
        keys = Keys(settings.namespace)
        return cls(settings, keys, client,
                   Scripts.for_settings(client, keys, settings))

    def of(self, partition: int) -> Cluster:
        """The same cluster, seen through partition ``partition``'s keys and scripts."""
        if partition == self.keys.partition:
            return self
        keys = self.keys.of(partition)
        return Cluster(self.settings, keys, self.client,
                       Scripts.for_settings(self.client, keys, self.settings))

    def each(self) -> list[Cluster]:
        """One view per partition (just this one when the cluster has one)."""
        return [self.of(p) for p in range(partitions.count(self.client, self.keys))]

    def of_flow(self, flow_id: str) -> Cluster:
        """The view of the partition ``flow_id`` lives in."""
        return self.of(partitions.of_flow(flow_id))


def echo(text: str, err: bool = False) -> None:
    """Print what a command shows: names, errors and tracebacks come from whoever
    submitted or wrote to Redis, so their control characters are shown escaped
    (``common.printable``), never sent to the terminal."""
    click.echo(lines(text), err=err)


def cluster_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --redis-url and --namespace, and passes the open ``cluster`` instead."""

    @click.option("--redis-url", help=URL_HELP)
    @click.option("--namespace", help=NS_HELP)
    @functools.wraps(fn)
    def wrapper(*args: Any, redis_url: str | None, namespace: str | None, **kwargs: Any) -> Any:
        cluster = Cluster.open(redis_url=redis_url, namespace=namespace)
        try:
            return fn(*args, cluster=cluster, **kwargs)
        except protocol.ProtocolMismatch as exc:  # this release writes what it would misread
            raise click.ClickException(str(exc)) from None
        except redis.ResponseError as exc:  # one line naming the key, not a traceback
            raise click.ClickException("Redis refused a command: " + keytypes.explain(
                cluster.client, cluster.keys, exc)) from None
        except redis.RedisError as exc:  # the connection lost midway
            raise click.ClickException(explain(cluster.settings.server_url, exc,
                                               first_contact=False)) from None

    return wrapper


def parameters(given: tuple[str, ...]) -> dict[str, Any]:
    """``--param`` NAME=VALUE pairs; a VALUE that reads as JSON is taken as such, else as a
    string."""
    out: dict[str, Any] = {}
    for item in given:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out
