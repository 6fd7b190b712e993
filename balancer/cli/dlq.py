"""`balancer dlq ...`: quarantined tasks, listed, retried or given up; and the bad entries
the dispatcher set aside, listed or dismissed."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from balancer import admin
from balancer.cli.common import Cluster, cluster_options, echo
from balancer.common import aside
from balancer.common.replies import (
    as_bytes_dict,
    as_bytes_list,
)


@click.group()
def dlq() -> None:
    """Quarantined tasks: those whose runs killed their worker `poison_threshold` times.

    A quarantined task waits, and so does its flow, until it is retried or purged.
    Bad entries the dispatcher set aside are listed by `balancer dlq aside`.
    """


@dlq.command("ls")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_ls(cluster: Cluster, as_json: bool) -> None:
    """List quarantined tasks with the reason."""
    client = cluster.client
    rows = [r for c in cluster.each() for r in admin.quarantined(client, c.keys)]
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    if not rows:
        echo("no quarantined tasks")
    for r in rows:
        echo(f"{r['id']}  {r['name']:<20} queue={r['queue']:<14} lost={r['lost']}"
                   f"  flow={r['flow']}  {r['reason']}")
    set_aside = sum(int(client.hlen(c.keys.aside)) for c in cluster.each())
    if set_aside:
        echo(f"{set_aside} bad entries set aside: balancer dlq aside")


@dlq.command("aside")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_aside(cluster: Cluster, as_json: bool) -> None:
    """List bad entries the dispatcher set aside: what was wrong, the key it was in, the
    entry as it was (bytes that are not UTF-8 escaped as \\xNN) and its score, to restore
    it by hand. Every other entry kept flowing meanwhile."""
    rows = aside.rows(as_bytes_dict(cluster.client.hgetall(cluster.keys.aside)))
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    if not rows:
        echo("nothing set aside")
    for r in rows:
        member = f' member="{r["member"]}"' if r["member"] else ""
        score = f" score={r['score']}" if r["score"] is not None else ""
        echo(f"{r['id']}  {r['kind']:<12} key={r['key']}{member}{score}  {r['detail']}")


@dlq.command("dismiss")
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every entry set aside.")
@cluster_options
def dlq_dismiss(entry_ids: tuple[str, ...], every: bool, cluster: Cluster) -> None:
    """Drop entries from the set-aside list (once handled). A condition still there (a
    queue key of the wrong type) is listed again when the dispatcher next meets it."""
    if every:
        entry_ids = tuple(aside.shown(f)
                          for f in as_bytes_list(cluster.client.hkeys(cluster.keys.aside)))
    elif not entry_ids:
        raise click.UsageError("name the entry ids, or give --all")
    for entry in entry_ids:
        if not cluster.scripts.clear_aside(entry):
            raise click.ClickException(f"no entry {entry} is set aside")
        echo(f"entry {entry} dismissed")


def _each(cluster: Cluster, task_ids: tuple[str, ...], every: bool,
          act: Callable[[Cluster, str], str]) -> None:
    """Apply ``act(partition, task id)`` (which says what it did) to each named (or every)
    quarantined task, in the partition whose dlq holds it."""
    if not every and not task_ids:
        raise click.UsageError("name the task ids, or give --all")
    views = {view.keys: view for view in cluster.each()}
    held = admin.dlq_holders(cluster.client, list(views), None if every else task_ids)
    for task_id in held if every else task_ids:
        view = views[held[task_id]] if task_id in held else cluster
        try:
            echo(act(view, task_id))
        except admin.AdminError as exc:
            raise click.ClickException(str(exc)) from None


@dlq.command("retry")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every quarantined task.")
@cluster_options
def dlq_retry(task_ids: tuple[str, ...], every: bool, cluster: Cluster) -> None:
    """Put quarantined tasks back into their queues (their loss count reset)."""
    def retry(view: Cluster, task_id: str) -> str:
        queue = admin.retry_quarantined(view.client, view.keys, view.scripts, task_id)
        return f"task {task_id} re-queued on {queue}"

    _each(cluster, task_ids, every, retry)


@dlq.command("purge")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every quarantined task.")
@cluster_options
def dlq_purge(task_ids: tuple[str, ...], every: bool, cluster: Cluster) -> None:
    """Give quarantined tasks up: they fail for good, their dependents too."""
    ttl_ms = int(cluster.settings.result_ttl * 1000)
    def purge(view: Cluster, task_id: str) -> str:
        admin.purge_quarantined(view.client, view.keys, view.scripts, task_id, ttl_ms)
        return f"task {task_id} failed for good"

    _each(cluster, task_ids, every, purge)
