"""`balancer status`, `balancer flows` and `balancer flow`: views of the cluster, and
`balancer flow cancel`."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from balancer import flowview
from balancer import status as status_view
from balancer.cancel import CancelError, cancel_flow
from balancer.cli.common import Cluster, cluster_options, echo, parameters
from balancer.common.models import FlowState
from balancer.pausing import resume_flow_run


@click.command()
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--flows", default=10, show_default=True, type=click.IntRange(min=1),
              help="How many recent flow runs to list.")
def status(cluster: Cluster, as_json: bool, flows: int) -> None:
    """Show the leader, workers with their load, queues with their depth and what holds
    them, recent flow runs."""
    view = status_view.gather_all(cluster.client, [c.keys for c in cluster.each()],
                                  recent=flows, leader_ttl=cluster.settings.leader_ttl)
    echo(json.dumps(view.to_dict(), indent=2) if as_json else status_view.render(view))


@click.command("flows")
@cluster_options
@click.option("-n", "--last", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many runs to list, newest first.")
@click.option("--state", type=click.Choice(sorted([*FlowState.FINISHED, FlowState.RUNNING])),
              help="Only runs in this state.")
@click.option("--name", metavar="PATTERN",
              help="Only runs of flows so named: a glob ('etl*'), matched against the"
                   " flow's name and the run's own name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def flows(cluster: Cluster, last: int, state: str | None, name: str | None,
          as_json: bool) -> None:
    """List recent flow runs: id, name, state, tasks done and failed, when submitted.
    `balancer flow ID` shows one. --state and --name look through the runs the cluster
    keeps listed (the latest 1000 per partition, those not expired)."""
    only = status_view.FlowFilter(state, name)
    rows = status_view.recent_flows_all(cluster.client, [c.keys for c in cluster.each()],
                                        last, only)
    if as_json:
        echo(json.dumps([asdict(r) for r in rows], indent=2))
    elif not rows:
        echo(("no flow runs match" if only else "no flow runs")
             + f" (finished runs expire after {cluster.settings.result_ttl:.0f}s)")
    else:
        echo("\n".join(status_view.flow_lines(rows)))


class _FlowGroup(click.Group):
    """`balancer flow ID` shows a run; `balancer flow cancel ID` cancels it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["show", *args]  # options may come first, as before: --json ID
        return super().parse_args(ctx, args)


@click.group("flow", cls=_FlowGroup)
def flow() -> None:
    """One flow run: `balancer flow FLOW_ID` shows it (`--verbose`: with tracebacks),
    `balancer flow cancel FLOW_ID` cancels it, `balancer flow resume FLOW_ID` resumes it
    from a pause. FLOW_ID as `balancer flows` lists it."""


@flow.command("show")
@click.argument("flow_id")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show each failed task's traceback.")
def flow_show(flow_id: str, cluster: Cluster, as_json: bool, verbose: bool) -> None:
    """Show one flow run: every task's state, worker, attempts and timings (queued,
    started, finished, waited, ran), why each unfinished task waits, and the error of
    each failed one."""
    view = flowview.gather(cluster.client, cluster.of_flow(flow_id).keys, flow_id)
    if view is None:
        raise click.ClickException(f"no flow run {flow_id} (finished runs expire after"
                                   f" {cluster.settings.result_ttl:.0f}s)")
    if as_json:
        echo(json.dumps(view.to_dict(), indent=2, default=repr))
    else:
        echo("\n".join(flowview.render(view, verbose)))


@flow.command("resume")
@click.argument("flow_id")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="A value the paused function gets (JSON, else a string). Repeatable.")
@cluster_options
def flow_resume(flow_id: str, inputs: tuple[str, ...], cluster: Cluster) -> None:
    """Resume a run whose @flow function waits in pause_flow_run, with the --input values
    (its wait_for_input gets them)."""
    try:
        resume_flow_run(flow_id, parameters(inputs), client=cluster.client,
                        namespace=cluster.keys.namespace)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    echo(f"flow {flow_id} resumed")


@flow.command("cancel")
@click.argument("flow_id")
@cluster_options
def flow_cancel(flow_id: str, cluster: Cluster) -> None:
    """Cancel a flow run: its queued tasks never start, its running ones are stopped,
    and it ends `cancelled`. Cancelling a finished run changes nothing."""
    try:
        done = cancel_flow(cluster.client, cluster.of_flow(flow_id).keys, flow_id,
                           int(cluster.settings.result_ttl * 1000))
    except KeyError:
        raise click.ClickException(f"no flow run {flow_id} (finished runs expire after"
                                   f" {cluster.settings.result_ttl:.0f}s)") from None
    except CancelError as exc:
        raise click.ClickException(str(exc)) from None
    if done.cancelled:
        told = f"; workers told to stop its runs: {', '.join(done.workers)}" \
            if done.workers else ""
        echo(f"flow {flow_id} cancelled: {done.cancelled} tasks{told}")
    else:
        echo(f"flow {flow_id} is already {done.state}: nothing to cancel")
