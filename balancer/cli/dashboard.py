"""`balancer dashboard`: the live web view of the cluster, its actions, and /metrics."""

from __future__ import annotations

import logging

import click

from balancer.cli.common import Cluster, cluster_options
from balancer.common import logs
from balancer.common.logoptions import log_level_option


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address exposes the"
                   " cluster's state (and, with a token, its actions) to that network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free one).")
@cluster_options
@log_level_option
def dashboard(host: str, port: int, cluster: Cluster, log_level: str) -> None:
    """Serve a live web dashboard of the cluster (workers, queues, flows, quarantined
    tasks, the leader, throughput) and Prometheus metrics at /metrics.

    Actions (pause and resume queues, set priority and limit, retry or purge quarantined
    tasks) need BALANCER_DASHBOARD_TOKEN: without it the dashboard is read-only.
    """
    from balancer.dashboard.server import Dashboard  # the server's imports: only here

    logs.setup(log_level.upper(), cluster.settings.log_format)
    try:
        app = Dashboard(cluster.client, cluster.settings, host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}"
                                   ) from None
    mode = "actions need the token" if cluster.settings.dashboard_token else \
        "read-only (set BALANCER_DASHBOARD_TOKEN to allow actions)"
    click.echo(f"dashboard of namespace {cluster.settings.namespace} at {app.url}"
               f"  (metrics: {app.url}metrics; {mode})", err=True)
    if host not in ("127.0.0.1", "localhost", "::1") and cluster.settings.dashboard_token:
        logging.getLogger("balancer.dashboard").warning(
            "serving on %s over plain HTTP: the token travels in clear; put a TLS proxy"
            " in front", host)
    try:
        app.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
