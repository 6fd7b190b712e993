"""`balancer events`: the cluster's event stream, one line per event."""

from __future__ import annotations

import contextlib

import click
import redis

from balancer import eventlog
from balancer.cli.common import Cluster, cluster_options, echo
from balancer.common import events as schema


@click.command("events")
@cluster_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they happen.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("-n", "--last", default=20, show_default=True, type=click.IntRange(min=0),
              help="How many past entries to print first.")
def events(cluster: Cluster, follow: bool, as_json: bool, last: int) -> None:
    """Print what happened: tasks started, completed, failed, retried, quarantined;
    workers joined, left, reaped; flows finished; leader changes; dispatch decisions.
    The stream keeps about BALANCER_EVENTS_MAX entries."""
    def show(event: schema.Event) -> None:
        echo(event.to_json() if as_json else schema.line(event))

    keys = [view.keys for view in cluster.each()]  # every partition's stream, merged
    past, lasts = (eventlog.latest_all(cluster.client, keys, last) if last
                   else ([], ["$"] * len(keys)))
    for event in past:
        show(event)
    if not follow:
        if not past and not as_json:
            echo("no events yet", err=True)
        return
    reader = eventlog.follower(cluster.client, keys, lasts)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            for event in reader.follow():
                show(event)
        except redis.RedisError as exc:
            raise click.ClickException(f"lost Redis while following: {exc}") from None
