"""`balancer status` and `balancer flow`: read-only views of the cluster."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
import redis

from balancer import status as status_view
from balancer import why
from balancer.cli.common import Cluster, cluster_options
from balancer.common import codec
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes, as_bytes_list, as_opt_bytes_list


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


def dynamic_listing(client: redis.Redis, keys: Keys, flow_id: str) -> list[tuple[str, str, str]]:
    """What a @flow function added to its run (balancer/dynamic.py): (id, name, kind)
    per task and sub-run, in the order added; nothing for a flow submitted whole."""
    found = []
    for entry in as_bytes_list(client.lrange(keys.flow_tasks(flow_id), 0, -1)):
        try:
            task_id, name, kind = codec.unpack(entry)
        except (codec.CodecError, ValueError, TypeError):
            continue  # not ours to show
        found.append((str(task_id), str(name), str(kind)))
    return found


@click.command("flow")
@click.argument("flow_id")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def flow(flow_id: str, cluster: Cluster, as_json: bool) -> None:
    """Show one flow run: every task's state, why each unfinished task waits, and the
    error of each failed one. FLOW_ID as `balancer status` lists it."""
    client, keys = cluster.client, cluster.keys
    name, state, blob, raised, parent = as_opt_bytes_list(client.hmget(
        keys.flow(flow_id), ["name", "state", "tasks", "error", "parent"]))
    if name is None:
        raise click.ClickException(f"no flow run {flow_id} (finished runs expire after"
                                   f" {cluster.settings.result_ttl:.0f}s)")
    state_text = as_bytes(state).decode()
    listed = [(str(t), str(n)) for t, n in codec.unpack(as_bytes(blob))]
    added = dynamic_listing(client, keys, flow_id)  # a @flow function's run
    listed += [(t, n) for t, n, kind in added if kind != "flow"]
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
    for run_id, run_name, kind in added:
        if kind == "flow":
            sub = as_opt_bytes_list(client.hmget(keys.flow(run_id), ["state"]))[0]
            rows.append({"id": run_id, "name": run_name, "state": "sub-run "
                         + (sub.decode() if sub else "expired"), "why": "", "error": ""})
    if as_json:
        extra = {"parent": parent.decode()} if parent else {}
        if raised:
            extra["error"] = str(codec.unpack_error(raised))
        click.echo(json.dumps({"id": flow_id, "name": name.decode(), "state": state_text,
                               **extra, "tasks": rows}, indent=2))
        return
    click.echo(f"flow {flow_id}  {name.decode()}  {state_text}"
               + (f"  (sub-run of {parent.decode()})" if parent else ""))
    if raised:
        click.echo(f"  its function raised {codec.unpack_error(raised)}")
    for r in rows:
        click.echo(f"  {r['id']}  {r['name']:<24} {r['state']:<16} {r['why'] or r['error']}")
