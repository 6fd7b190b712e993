"""`balancer tag ...`: per-tag concurrency limits on the cluster (balancer/taglimits.py)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from balancer import admin
from balancer.cli.common import Cluster, cluster_options, echo
from balancer.options import COUNT_LIMIT
from balancer.taglimits import table


@click.group()
def tag() -> None:
    """Limit how many tasks carrying a tag run at once, across the cluster."""


@tag.command("limit")
@click.argument("name")
@click.argument("limit", required=False, type=click.IntRange(1, COUNT_LIMIT))
@click.option("--remove", is_flag=True, help="Remove the tag's limit.")
@cluster_options
def tag_limit(name: str, limit: int | None, remove: bool, cluster: Cluster) -> None:
    """Set or remove a tag's limit.

    Let at most LIMIT tasks tagged NAME be leased at once, across the cluster; the others
    wait in their queues (they do not fail) and go as places free."""
    if (limit is None) == (not remove):
        raise click.UsageError("give a LIMIT or --remove, not both")
    try:
        for view in cluster.each():  # every partition has the limit (docs/scaling.md)
            admin.configure_tag(cluster.client, view.keys, name, None if remove else limit)
    except admin.AdminError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    echo(f"tag {name}: limit removed" if remove else f"tag {name}: limit {limit}")


@tag.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cluster_options
def tag_ls(as_json: bool, cluster: Cluster) -> None:
    """List tag limits and leases held.

    The tags with a limit, or with leases still counted against one: the limit, and how
    many tasks with the tag are leased now."""
    rows = admin.tag_rows(cluster.client, cluster.keys)
    if as_json:
        echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    if not rows:
        echo("no tag limits (set one with: balancer tag limit TAG N)")
        return
    echo("\n".join(table(rows)))
