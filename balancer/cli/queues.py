"""`balancer queue ...`: priority, concurrency limit, pause and resume, and removing an
empty queue, on the cluster."""

from __future__ import annotations

from typing import Any

import click

from balancer import admin
from balancer.cli.common import Cluster, cluster_options, echo
from balancer.options import COUNT_LIMIT, PRIORITY_LIMIT
from balancer.queue import check_queue_name
from balancer.queueholds import holds


@click.group()
def queue() -> None:
    """Configure queues on the cluster: priority, concurrency limit, pause and resume,
    remove an empty one."""


def _configure(cluster: Cluster, name: str, fields: dict[str, Any], message: str) -> None:
    """Set (or, for "", clear) queue settings and tell the dispatcher."""
    try:
        for view in cluster.each():  # every partition has the queue's settings
            admin.configure_queue(cluster.client, view.keys, name, fields)
    except admin.AdminError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    echo(message)


@queue.command("set")
@click.argument("name")
@click.option("--priority", type=click.IntRange(-PRIORITY_LIMIT, PRIORITY_LIMIT),
              help="Higher is served first. Queues without one are 0.")
@click.option("--concurrency-limit", type=click.IntRange(1, COUNT_LIMIT),
              help="Most tasks of this queue leased at once, across the cluster.")
@click.option("--no-limit", is_flag=True, help="Remove the concurrency limit.")
@cluster_options
def queue_set(name: str, priority: int | None, concurrency_limit: int | None, no_limit: bool,
              cluster: Cluster) -> None:
    """Set a queue's priority and concurrency limit (created if new)."""
    if priority is None and concurrency_limit is None and not no_limit:
        raise click.UsageError("give --priority, --concurrency-limit or --no-limit")
    fields: dict[str, Any] = {"priority": priority, "concurrency_limit": concurrency_limit}
    if no_limit:
        fields["concurrency_limit"] = ""
    _configure(cluster, name, fields, f"queue {name} updated")


@queue.command("pause")
@click.argument("name")
@cluster_options
def queue_pause(name: str, cluster: Cluster) -> None:
    """Stop handing out tasks of a queue; queued tasks wait, running ones finish."""
    _configure(cluster, name, {"paused": "1"}, f"queue {name} paused")


@queue.command("resume")
@click.argument("name")
@cluster_options
def queue_resume(name: str, cluster: Cluster) -> None:
    """Hand out a paused queue's tasks again."""
    _configure(cluster, name, {"paused": "0"}, f"queue {name} resumed")


@queue.command("rm")
@click.argument("name")
@cluster_options
def queue_rm(name: str, cluster: Cluster) -> None:
    """Remove a queue with nothing in it: its settings and its name. Refused, saying what
    holds it, while tasks are queued, leased, running, retrying, pending or quarantined in
    it, or a worker serves it."""
    try:
        check_queue_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    held = holds(cluster.client, cluster.keys, name).reasons()
    if held:
        raise click.ClickException(f"queue {name} is in use, not removed: {'; '.join(held)}")
    done = cluster.scripts.queue_rm(name)
    if done == -1:
        raise click.ClickException(f"no queue {name} (balancer status lists them)")
    if done == 0:
        raise click.ClickException(f"queue {name} is in use, not removed: tasks were just"
                                   " queued in it")
    echo(f"queue {name} removed")
