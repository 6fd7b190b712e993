"""`balancer serve`: run the dispatcher."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from balancer.cli.common import NS_HELP, Cluster
from balancer.common import partitions
from balancer.common.eviction import read_policy
from balancer.common.logoptions import log_format_option, log_level_option
from balancer.common.retry import wait_out
from balancer.common.urls import URL_HELP, redact
from balancer.dispatcher import Dispatcher
from balancer.serve_partitions import PartitionedServe

log = logging.getLogger("balancer")


@click.command()
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
@click.option("--worker-timeout", type=float,
              help="Seconds without a heartbeat before a worker is declared dead and its tasks"
                   " re-queued. Default 3.")
@click.option("--partitions", "count", type=click.IntRange(min=1),
              help="Partitions of the namespace, each its own hash tag and leader lease,"
                   " shared among the serves running (docs/scaling.md). Every serve of a"
                   " namespace must be given the same count. Default:"
                   " $BALANCER_PARTITIONS or 1.")
@log_level_option
@log_format_option
def serve(redis_url: str | None, namespace: str | None, worker_timeout: float | None,
          count: int | None, log_level: str, log_format: str | None) -> None:
    """Run the dispatcher: hand every ready task to the least-loaded worker serving its queue.

    Several may run against one Redis: one leads, the others stand by and take over
    within a few seconds if it dies. With --partitions N, each leads its share of the N
    partitions and takes over those of one that dies. Stop with ctrl-C or SIGTERM.
    """
    cluster = Cluster.open(long_lived_log_level=log_level, redis_url=redis_url,
                           namespace=namespace, worker_timeout=worker_timeout,
                           log_format=log_format, partitions=count)
    count = cluster.settings.partitions
    try:  # Redis full or loading now: waited out, as a worker waits to register
        wait_out(lambda: partitions.claim(cluster.client, cluster.keys, count), log,
                 "balancer serve cannot start yet", "balancer serve could start")
    except partitions.PartitionsError as exc:
        raise click.ClickException(str(exc)) from None
    dispatcher: Dispatcher | PartitionedServe = (
        Dispatcher(cluster.client, cluster.settings) if count == 1
        else PartitionedServe(cluster.client, cluster.settings, count))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("got %s: stopping", signal.Signals(signum).name)
        dispatcher.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("balancer serve on %s", redact(cluster.settings.server_url))
    policy = read_policy(cluster.client)
    if policy is None:
        log.info("the Redis maxmemory-policy cannot be read (INFO refused or unknown): make"
                 " sure it is noeviction, or Redis may delete tasks when memory runs short")
    elif policy.warning:
        log.warning("%s", policy.warning)
    dispatcher.run()
