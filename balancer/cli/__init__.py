"""``balancer``: run the dispatcher, look at the cluster, configure queues, tag limits and
concurrency limits."""

from __future__ import annotations

import click

from balancer.cli.acl import acl
from balancer.cli.artifacts import artifact
from balancer.cli.cache import cache
from balancer.cli.dashboard import dashboard
from balancer.cli.deployments import deployment
from balancer.cli.dlq import dlq
from balancer.cli.events import events
from balancer.cli.limits import limit
from balancer.cli.queues import queue
from balancer.cli.schedules import schedule
from balancer.cli.serve import serve
from balancer.cli.tags import tag
from balancer.cli.variables import variable
from balancer.cli.views import flow, flows, status
from balancer.common.cligroup import EscapingGroup


@click.group(cls=EscapingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="balancer")
def main() -> None:
    """Dispatch tasks and flows to the least-loaded workers, over Redis."""


for command in (serve, status, flows, flow, artifact, queue, tag, limit, variable, schedule,
                deployment, dlq, cache, events, dashboard, acl):
    main.add_command(command)
