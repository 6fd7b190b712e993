"""``worker``: run a worker that executes tasks the dispatcher leases to it."""

from __future__ import annotations

import logging
import os
import sys

import click
from balancer.common import logs, signals
from balancer.common.cligroup import EscapingGroup
from balancer.common.connection import Unreachable, reach
from balancer.common.logoptions import log_format_option, log_level_option
from balancer.common.serverversion import TooOld
from balancer.common.settings import Settings, SettingsError
from balancer.common.urls import URL_HELP
from balancer.worker.supervisor import Worker, WorkerError


@click.group(cls=EscapingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="balancer")
def main() -> None:
    """Execute tasks handed out by `balancer serve`."""


@main.command()
@click.option("--queue", "-q", "queues", multiple=True, metavar="NAME",
              help="A queue to serve; repeat for several. Default: default.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              show_default="number of cores",
              help="Tasks run at once (slots). A count the host cannot hold (process pool:"
                   " 10 MB of memory per slot at the least; thread pool: threads it lets"
                   " start) is refused at start, naming the limit.")
@click.option("--pool", type=click.Choice(["process", "thread"]), default="process",
              show_default=True,
              help="process: each slot runs tasks in its own child process (CPU-bound work;"
                   " a hung or crashing task is killed, with the processes it started, and"
                   " replaced). thread: in threads (I/O-bound work; a timed-out or cancelled"
                   " task is failed and stopped by an exception raised in its thread, once it"
                   " is back in Python code; a worker with as many threads that never come"
                   " back as slots exits 1, to be started afresh).")
@click.option("--name", help="Worker id, unique in the cluster. Default: HOST-PID.")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Import a module of tasks at start (repeatable), e.g. examples.etl."
                   " Tasks are otherwise imported on first use; the current folder is on"
                   " the import path.")
@click.option("--allow", "allow", multiple=True, metavar="PACKAGE|FOLDER",
              help="Also run @task functions of this package (and all under it) or of"
                   " modules and scripts in this folder (repeatable; adds to"
                   " $BALANCER_ALLOWED_TASKS). A worker always runs those of --import"
                   " modules and of the folder it starts in, and nothing else: a task"
                   " record naming any other function fails with TaskNotAllowed.")
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help="Key namespace. Default: $BALANCER_NAMESPACE or balancer.")
@click.option("--heartbeat-interval", type=float, help="Seconds between heartbeats. Default 1.")
@click.option("--grace", type=float, help="Seconds running tasks get to finish on SIGTERM."
                                          " Default 30.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=0), metavar="N",
              help="Replace each pool process by a fresh one after N tasks, against leaks"
                   " in long-lived processes (process pool; 0: never). Default:"
                   " $BALANCER_MAX_TASKS_PER_CHILD or 0.")
@click.option("--max-memory-per-child", type=click.IntRange(min=0), metavar="MB",
              help="Replace a pool process by a fresh one after a task that left its"
                   " resident memory over MB megabytes, before the kernel's OOM killer"
                   " ends it mid-task (process pool; 0: no bound). Default:"
                   " $BALANCER_MAX_MEMORY_PER_CHILD or 0.")
@click.option("--preload/--no-preload", "preload", default=None,
              help="Whether a process pool of several slots imports the --import modules"
                   " once, in the process it forks the pool processes from, so that they"
                   " share what the modules load instead of each importing it again."
                   " --no-preload for modules that start threads or open connections at"
                   " import, which a fork does not carry over. Default:"
                   " $BALANCER_PRELOAD_TASKS or on.")
@log_level_option
@log_format_option
def start(queues: tuple[str, ...], concurrency: int, pool: str, name: str | None,
          imports: tuple[str, ...], allow: tuple[str, ...], redis_url: str | None,
          namespace: str | None, heartbeat_interval: float | None, grace: float | None,
          max_tasks_per_child: int | None, max_memory_per_child: int | None,
          preload: bool | None, log_level: str, log_format: str | None) -> None:
    """Start a worker serving QUEUEs: heartbeat, fetch, execute, acknowledge.

    Example: worker start --queue high-priority --queue default --concurrency 4
    """
    if pool == "thread" and (max_tasks_per_child or max_memory_per_child):
        raise click.UsageError("--max-tasks-per-child and --max-memory-per-child replace"
                               " pool processes: they need --pool process (a thread pool's"
                               " slots share the worker's one process)")
    try:
        settings = Settings.from_env(redis_url=redis_url, namespace=namespace,
                                     heartbeat_interval=heartbeat_interval,
                                     shutdown_grace=grace, log_format=log_format,
                                     max_tasks_per_child=max_tasks_per_child,
                                     max_memory_per_child=max_memory_per_child,
                                     preload_tasks=preload)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    logs.setup(log_level, settings.log_format)
    if pool == "thread" and (settings.max_tasks_per_child or settings.max_memory_per_child):
        logging.getLogger("worker").warning(
            "BALANCER_MAX_TASKS_PER_CHILD and BALANCER_MAX_MEMORY_PER_CHILD are ignored by a"
            " thread pool: its slots share the worker's one process")
    for q in queues:
        if not q or any(c.isspace() for c in q):
            raise click.BadParameter(f"invalid queue name {q!r}", param_hint="--queue")
    if name is not None:
        try:
            signals.check_worker_id(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--name") from None
    try:
        client = reach(settings.server_url, logging.getLogger("worker"))  # waits if loading
    except (Unreachable, TooOld) as exc:  # one line, the URL redacted
        raise click.ClickException(str(exc)) from None
    try:
        worker = Worker(client, settings, queues=queues or ("default",),
                        concurrency=concurrency, pool=pool, name=name, imports=imports,
                        allow=allow, log_level=log_level)
        worker.run()
    except WorkerError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
