"""`balancer variable set|get|ls|unset`: Prefect's Variables, kept by the cluster
(balancer/variables.py)."""

from __future__ import annotations

import json

import click

from balancer.cli.common import Cluster, cluster_options, echo
from balancer.variables import Variable, VariableError, variables


@click.group()
def variable() -> None:
    """Variables: named values any task, flow or client reads (Variable.get)."""


@variable.command("set")
@click.argument("name")
@click.argument("value")
@click.option("--overwrite", is_flag=True, help="Replace the value it has, if any.")
@click.option("--tag", "tags", multiple=True, help="A tag kept with it. Repeatable.")
@cluster_options
def variable_set(name: str, value: str, overwrite: bool, tags: tuple[str, ...],
                 cluster: Cluster) -> None:
    """Keep VALUE (JSON, else a string) under NAME."""
    try:
        given = json.loads(value)
    except json.JSONDecodeError:
        given = value
    try:
        Variable.set(name, given, overwrite=overwrite, tags=list(tags), client=cluster.client,
                     namespace=cluster.keys.namespace)
    except VariableError as exc:
        raise click.ClickException(str(exc)) from None
    echo(f"variable {name} = {json.dumps(given)}")


@variable.command("get")
@click.argument("name")
@cluster_options
def variable_get(name: str, cluster: Cluster) -> None:
    """Print NAME's value as JSON (exit 1 when it has none)."""
    try:
        value = Variable.get(name, default=_NONE, client=cluster.client,
                             namespace=cluster.keys.namespace)
    except VariableError as exc:
        raise click.ClickException(str(exc)) from None
    if value is _NONE:
        echo(f"no variable {name}", err=True)
        raise SystemExit(1)
    echo(json.dumps(value, default=repr))


_NONE = object()


@variable.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cluster_options
def variable_ls(as_json: bool, cluster: Cluster) -> None:
    """List variables: name, value, tags."""
    rows = variables(client=cluster.client, namespace=cluster.keys.namespace)
    if as_json:
        echo(json.dumps([{"name": r.name, "value": r.value, "tags": list(r.tags)}
                         for r in rows], indent=2, default=repr))
    elif not rows:
        echo("no variables (set one with: balancer variable set NAME VALUE)")
    for r in rows if not as_json else ():
        tags = f"  tags: {', '.join(r.tags)}" if r.tags else ""
        echo(f"{r.name} = {json.dumps(r.value, default=repr)}{tags}")


@variable.command("unset")
@click.argument("name")
@cluster_options
def variable_unset(name: str, cluster: Cluster) -> None:
    """Forget NAME."""
    try:
        had = Variable.unset(name, client=cluster.client, namespace=cluster.keys.namespace)
    except VariableError as exc:
        raise click.ClickException(str(exc)) from None
    echo(f"variable {name} unset" if had else f"no variable {name}")
