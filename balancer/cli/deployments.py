"""`balancer deployment ls|run`: the deployments serve processes serve (Prefect's
`flow.serve`), and runs asked of them (balancer/deployments.py, balancer/serving.py)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from balancer.cli.common import Cluster, cluster_options, echo, parameters
from balancer.deployments import GONE_AFTER_MS, DeploymentError, run_deployment, served
from balancer.schedule_fire import shown


@click.group()
def deployment() -> None:
    """Deployments: @flow functions served by `flow.serve(...)` processes."""


@deployment.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cluster_options
def deployment_ls(as_json: bool, cluster: Cluster) -> None:
    """List deployments: each serve process serving one (host, pid, when last heard of),
    its schedule, next run and default parameters, and the runs asked and not yet taken."""
    rows = served(cluster.client, cluster.keys)
    now = int(cluster.scripts.now_ms())
    if as_json:
        echo(json.dumps([{**asdict(r), "alive": now - r.seen_ms < GONE_AFTER_MS}
                         for r in rows], indent=2, default=str))
        return
    if not rows:
        echo("no deployment is served (serve one with: my_flow.serve(name=..., cron=...))")
        return
    for r in rows:
        ago = (now - r.seen_ms) / 1000
        alive = "serving" if now - r.seen_ms < GONE_AFTER_MS else "GONE"
        next_run = shown(r.next_ms) if r.next_ms is not None else "-"
        echo(f"{r.deployment}  {alive} on {r.host} pid {r.pid} (heard {ago:.0f}s ago)"
             f"  {r.schedule}  next: {next_run}  waiting: {r.waiting}"
             + (f"  parameters: {json.dumps(r.parameters, default=str)}" if r.parameters else "")
             + "".join(f"  {k}: {', '.join(v) if isinstance(v, list) else v}"
                       for k, v in r.about.items()))


@deployment.command("run")
@click.argument("name")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter's value for this run, over the deployment's (JSON, else a"
                   " string). Repeatable.")
@click.option("--wait/--no-wait", default=False,
              help="Wait until the run ends (its final state is printed; exit 1 unless it"
                   " completed).")
@click.option("--timeout", type=float, default=None,
              help="With --wait: give up after this many seconds (exit 2).")
@cluster_options
def deployment_run(name: str, params: tuple[str, ...], wait: bool, timeout: float | None,
                   cluster: Cluster) -> None:
    """Ask the deployment NAME ('flow-name/deployment-name') for a run: a process serving
    it takes it (it waits in Redis until one does). Prints the flow run's id."""
    try:
        run = run_deployment(name, parameters(params), timeout=0, client=cluster.client,
                             namespace=cluster.keys.namespace)
    except DeploymentError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    echo(f"flow run {run.id} asked of deployment {name}")
    if not wait:
        return
    try:
        state = run.wait(timeout)
    except TimeoutError as exc:
        echo(str(exc), err=True)
        raise SystemExit(2) from None
    echo(f"flow run {run.id}: {state}")
    if state != "completed":
        raise SystemExit(1)
