"""`balancer limit ...`: concurrency limits that `with concurrency(NAME):` blocks hold slots
of, and `rate_limit(NAME)` takes slots of that decay, cluster-wide (balancer/concurrency)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from balancer.cli.common import Cluster, cluster_options, echo
from balancer.concurrency import MAX_DECAY, concurrency_limits, set_concurrency_limit


@click.group()
def limit() -> None:
    """Concurrency limits: how many slots `with concurrency(NAME)` blocks may hold at once."""


def _configure(cluster: Cluster, name: str, slots: int | None, decay: float = 0.0) -> None:
    try:
        set_concurrency_limit(name, slots, cluster.client, slot_decay_per_second=decay,
                              namespace=cluster.keys.namespace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


@limit.command("set")
@click.argument("name")
@click.argument("slots", type=click.IntRange(1, 1_000_000))
@click.option("--slot-decay-per-second", "decay", type=click.FloatRange(0, MAX_DECAY),
              default=0.0, show_default=True, metavar="RATE",
              help="How many of rate_limit's slots free each second; 0: none (rate_limit"
                   " refuses the limit).")
@cluster_options
def limit_set(name: str, slots: int, decay: float, cluster: Cluster) -> None:
    """Let at most SLOTS slots of NAME be held at once, across the cluster.

    A block `with concurrency(NAME, occupy=N)` waits until N slots are free, in a task, a
    @flow function or any client code; it frees them when it ends (or, if its process
    dies, when their lease runs out: BALANCER_CONCURRENCY_LEASE).

    `rate_limit(NAME)` waits for a slot the same way and never gives it back: with
    --slot-decay-per-second RATE, its slots free RATE a second, so past a burst of SLOTS
    calls it lets RATE calls a second through (`limit set api 10
    --slot-decay-per-second 2`)."""
    _configure(cluster, name, slots, decay)
    echo(f"concurrency limit {name}: {slots} slots"
         + (f", rate_limit's decaying {decay:g} a second" if decay else ""))


@limit.command("rm")
@click.argument("name")
@cluster_options
def limit_rm(name: str, cluster: Cluster) -> None:
    """Remove NAME's limit: its blocks wait for nothing from now on."""
    _configure(cluster, name, None)
    echo(f"concurrency limit {name}: removed")


@limit.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cluster_options
def limit_ls(as_json: bool, cluster: Cluster) -> None:
    """List concurrency limits and the slots held under each now."""
    rows = concurrency_limits(cluster.client, namespace=cluster.keys.namespace)
    if as_json:
        echo(json.dumps([asdict(r) for r in rows], indent=2))
    elif not rows:
        echo("no concurrency limits (set one with: balancer limit set NAME N)")
    else:
        echo("\n".join(f"  {r.name:<30} {r.held}/{r.limit} slots held"
                       + (f", decaying {r.slot_decay_per_second:g}/s"
                          if r.slot_decay_per_second else "")
                       for r in rows))
