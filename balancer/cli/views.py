"""`balancer status` and `balancer flow`: read-only views of the cluster."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from balancer import status as status_view
from balancer import why
from balancer.cli.common import Cluster, cluster_options
from balancer.common import codec
from balancer.common.replies import as_bytes, as_opt_bytes_list
from balancer.schedule_fire import shown


@click.command()
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--flows", default=10, show_default=True, type=click.IntRange(min=1),
              help="How many recent flow runs to list.")
def status(cluster: Cluster, as_json: bool, flows: int) -> None:
    """Show the leader, workers with their load, queues with their depth and what holds
    them, recent flow runs."""
    view = status_view.gather(cluster.client, cluster.keys, recent=flows)
    click.echo(json.dumps(view.to_dict(), indent=2) if as_json else status_view.render(view))


@click.command("flows")
@cluster_options
@click.option("-n", "--last", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many runs to list, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def flows(cluster: Cluster, last: int, as_json: bool) -> None:
    """List recent flow runs: id, name, state, tasks done and failed, when submitted.
    `balancer flow ID` shows one."""
    rows = status_view.recent_flows(cluster.client, cluster.keys, last)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    elif not rows:
        click.echo("no flow runs (finished runs expire after"
                   f" {cluster.settings.result_ttl:.0f}s)")
    else:
        click.echo("\n".join(status_view.flow_lines(rows)))


@click.command("flow")
@click.argument("flow_id")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def flow(flow_id: str, cluster: Cluster, as_json: bool) -> None:
    """Show one flow run: every task's state, why each unfinished task waits, and the
    error of each failed one. FLOW_ID as `balancer status` lists it."""
    client, keys = cluster.client, cluster.keys
    name, state, blob, schedule, scheduled = as_opt_bytes_list(client.hmget(
        keys.flow(flow_id), ["name", "state", "tasks", "schedule", "scheduled"]))
    if name is None:
        raise click.ClickException(f"no flow run {flow_id} (finished runs expire after"
                                   f" {cluster.settings.result_ttl:.0f}s)")
    state_text = as_bytes(state).decode()
    listed = [(str(t), str(n)) for t, n in codec.unpack(as_bytes(blob))]
    facts = why.task_facts(client, keys, [t for t, _ in listed])
    held = why.ClusterFacts.gather(client, keys)
    pipe = client.pipeline(transaction=False)
    for task_id, _ in listed:
        pipe.hget(keys.task(task_id), "error")
    rows = []
    for (task_id, task_name), error in zip(listed, pipe.execute()):
        f = facts.get(task_id)
        err = codec.unpack_error(error)
        rows.append({"id": task_id, "name": task_name, "state": f.state if f else "expired",
                     "why": why.reason(f, held) if f else "",
                     "error": str(err) if err and (f is None or f.state != "completed")
                     else ""})
    # A run fired by a schedule names it and the due time it was fired for.
    by = (schedule.decode(errors="replace"), shown(float(scheduled))) if (
        schedule is not None and scheduled is not None) else None
    if as_json:
        click.echo(json.dumps({"id": flow_id, "name": name.decode(), "state": state_text,
                               "tasks": rows, **({"schedule": by[0], "scheduled": by[1]}
                                                 if by else {})}, indent=2))
        return
    click.echo(f"flow {flow_id}  {name.decode()}  {state_text}"
               + (f"  (schedule {by[0]}, due {by[1]})" if by else ""))
    for r in rows:
        click.echo(f"  {r['id']}  {r['name']:<24} {r['state']:<16} {r['why'] or r['error']}")
