"""`balancer artifact ls|inspect`: what tasks and flows showed of their work (Prefect's
artifacts: balancer/artifacts.py). A run's own are listed by `balancer flow ID`."""

from __future__ import annotations

import contextlib
import json

import click

from balancer.artifacts import Artifact, latest, read, summary
from balancer.cli.common import Cluster, cluster_options, echo


@click.group()
def artifact() -> None:
    """Artifacts: markdown, tables, links and progress that tasks and flows made."""


@artifact.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cluster_options
def artifact_ls(as_json: bool, cluster: Cluster) -> None:
    """List the latest artifact of each key (a run's own: `balancer flow ID`)."""
    rows = latest(cluster.client, cluster.keys)
    if as_json:
        echo(json.dumps([a.to_dict() for a in rows], indent=2, default=repr))
    elif not rows:
        echo("no keyed artifacts (make one with create_markdown_artifact(..., key=...))")
    for a in rows if not as_json else ():
        run = f"flow {a.flow_run_id}" if a.flow_run_id else "no run"
        echo(f"{a.id}  {summary(a)}  ({run})")


@artifact.command("inspect")
@click.argument("key_or_id")
@cluster_options
def artifact_inspect(key_or_id: str, cluster: Cluster) -> None:
    """Print an artifact in full, as JSON: the latest of KEY_OR_ID, else the one of that id."""
    found = None
    with contextlib.suppress(ValueError):  # not a key: an id
        found = Artifact.get(key_or_id, client=cluster.client,
                             namespace=cluster.keys.namespace)
    if found is None:
        found = read(cluster.client, cluster.keys, key_or_id)
    if found is None:
        echo(f"no artifact {key_or_id} (none made, or it expired)", err=True)
        raise SystemExit(1)
    echo(json.dumps(found.to_dict(), indent=2, default=repr))
