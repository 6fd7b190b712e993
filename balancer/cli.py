"""``balancer``: run the dispatcher, look at the cluster, configure queues."""

from __future__ import annotations

import json
import logging
import signal
import sys
from types import FrameType
from typing import Any

import click

from balancer import status as status_view
from balancer.dispatcher import Dispatcher
from balancer.queue import check_queue_name
from common import codec, logs, signals
from common.connection import connect
from common.keys import Keys
from common.scripts import Scripts
from common.settings import Settings, SettingsError

log = logging.getLogger("balancer")

URL_HELP = ("Redis URL of the cluster, e.g. redis://host:6379/0. Default: $BALANCER_REDIS_URL,"
            " else redis://127.0.0.1:6379/0.")
NS_HELP = ("Key namespace, to run several clusters on one Redis. Default: $BALANCER_NAMESPACE"
           " or balancer.")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def _client(settings: Settings) -> Any:
    client = connect(settings.server_url)
    try:
        client.ping()
    except Exception as exc:
        raise click.ClickException(f"cannot reach Redis at {settings.server_url}: {exc}") from None
    return client


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Dispatch tasks and flows to the least-loaded workers, over Redis."""


@main.command()
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
@click.option("--worker-timeout", type=float,
              help="Seconds without a heartbeat before a worker is declared dead and its tasks"
                   " re-queued. Default 3.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def serve(redis_url: str | None, namespace: str | None, worker_timeout: float | None,
          log_level: str) -> None:
    """Run the dispatcher: hand every ready task to the least-loaded worker serving its queue.

    Several may run against one Redis: one leads, the others stand by and take over
    within a few seconds if it dies. Stop with ctrl-C or SIGTERM.
    """
    logs.setup(log_level)
    settings = _settings(redis_url=redis_url, namespace=namespace, worker_timeout=worker_timeout)
    dispatcher = Dispatcher(_client(settings), settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("got %s: stopping", signal.Signals(signum).name)
        dispatcher.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("balancer serve on %s", settings.server_url)
    dispatcher.run()


@main.command()
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--flows", default=10, show_default=True, type=click.IntRange(min=1),
              help="How many recent flow runs to list.")
def status(redis_url: str | None, namespace: str | None, as_json: bool, flows: int) -> None:
    """Show the leader, workers with their load, queues with their depth, recent flow runs."""
    settings = _settings(redis_url=redis_url, namespace=namespace)
    view = status_view.gather(_client(settings), Keys(settings.namespace), recent=flows)
    if as_json:
        click.echo(json.dumps(view.to_dict(), indent=2))
    else:
        click.echo(status_view.render(view))


@main.command("flow")
@click.argument("flow_id")
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def flow_view(flow_id: str, redis_url: str | None, namespace: str | None,
              as_json: bool) -> None:
    """Show one flow run: every task's state, why each unfinished task waits, and the
    error of each failed one. FLOW_ID as `balancer status` lists it."""
    from balancer import why

    settings = _settings(redis_url=redis_url, namespace=namespace)
    keys = Keys(settings.namespace)
    client = _client(settings)
    name, state, blob = client.hmget(keys.flow(flow_id), ["name", "state", "tasks"])
    if name is None:
        raise click.ClickException(f"no flow run {flow_id} (finished runs expire after"
                                   f" {settings.result_ttl:.0f}s)")
    listed = [(str(t), str(n)) for t, n in codec.unpack(blob)]
    facts = why.task_facts(client, keys, [t for t, _ in listed])
    cluster = why.ClusterFacts.gather(client, keys)
    pipe = client.pipeline(transaction=False)
    for task_id, _ in listed:
        pipe.hget(keys.task(task_id), "error")
    errors = pipe.execute()
    rows = []
    for (task_id, task_name), error in zip(listed, errors):
        f = facts.get(task_id)
        err = codec.unpack_error(error)
        rows.append({"id": task_id, "name": task_name, "state": f.state if f else "expired",
                     "why": why.reason(f, cluster) if f else "",
                     "error": str(err) if err and (f is None or f.state != "completed")
                     else ""})
    if as_json:
        click.echo(json.dumps({"id": flow_id, "name": name.decode(), "state": state.decode(),
                               "tasks": rows}, indent=2))
        return
    click.echo(f"flow {flow_id}  {name.decode()}  {state.decode()}")
    for r in rows:
        detail = r["why"] or r["error"]
        click.echo(f"  {r['id']}  {r['name']:<24} {r['state']:<16} {detail}")


@main.group()
def queue() -> None:
    """Configure queues on the cluster: priority, concurrency limit, pause and resume."""


def _queue_command(redis_url: str | None, namespace: str | None, name: str,
                   fields: dict[str, Any], message: str) -> None:
    try:
        check_queue_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    settings = _settings(redis_url=redis_url, namespace=namespace)
    keys = Keys(settings.namespace)
    client = _client(settings)
    pipe = client.pipeline(transaction=True)
    set_fields = {k: v for k, v in fields.items() if v is not None and v != ""}
    if set_fields:
        pipe.hset(keys.queue_conf(name), mapping=set_fields)
    cleared = [k for k, v in fields.items() if v == ""]
    if cleared:
        pipe.hdel(keys.queue_conf(name), *cleared)
    pipe.sadd(keys.queues, name)
    pipe.rpush(keys.wake, signals.QUEUES)
    pipe.execute()
    click.echo(message)


@queue.command("set")
@click.argument("name")
@click.option("--priority", type=int, help="Higher is served first. Queues without one are 0.")
@click.option("--concurrency-limit", type=click.IntRange(min=1),
              help="Most tasks of this queue leased at once, across the cluster.")
@click.option("--no-limit", is_flag=True, help="Remove the concurrency limit.")
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
def queue_set(name: str, priority: int | None, concurrency_limit: int | None, no_limit: bool,
              redis_url: str | None, namespace: str | None) -> None:
    """Set a queue's priority and concurrency limit (created if new)."""
    if priority is None and concurrency_limit is None and not no_limit:
        raise click.UsageError("give --priority, --concurrency-limit or --no-limit")
    fields: dict[str, Any] = {"priority": priority, "concurrency_limit": concurrency_limit}
    if no_limit:
        fields["concurrency_limit"] = ""
    _queue_command(redis_url, namespace, name, fields, f"queue {name} updated")


@queue.command("pause")
@click.argument("name")
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
def queue_pause(name: str, redis_url: str | None, namespace: str | None) -> None:
    """Stop handing out tasks of a queue; queued tasks wait, running ones finish."""
    _queue_command(redis_url, namespace, name, {"paused": "1"}, f"queue {name} paused")


@queue.command("resume")
@click.argument("name")
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
def queue_resume(name: str, redis_url: str | None, namespace: str | None) -> None:
    """Hand out a paused queue's tasks again."""
    _queue_command(redis_url, namespace, name, {"paused": "0"}, f"queue {name} resumed")


@main.group()
def dlq() -> None:
    """Quarantined tasks: those whose runs killed their worker `poison_threshold` times.

    A quarantined task waits, and so does its flow, until it is retried or purged.
    """


def _dlq_ids(client: Any, keys: Keys, task_ids: tuple[str, ...], every: bool) -> list[str]:
    if every:
        return [m.decode() for m in client.zrange(keys.dlq, 0, -1)]
    if not task_ids:
        raise click.UsageError("name the task ids, or give --all")
    return list(task_ids)


@dlq.command("ls")
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_ls(redis_url: str | None, namespace: str | None, as_json: bool) -> None:
    """List quarantined tasks with the reason."""
    settings = _settings(redis_url=redis_url, namespace=namespace)
    keys = Keys(settings.namespace)
    client = _client(settings)
    entries = client.zrange(keys.dlq, 0, -1, withscores=True)
    pipe = client.pipeline(transaction=False)
    for member, _ in entries:
        pipe.hmget(keys.task(member.decode()), ["name", "fn", "queue", "flow", "lost", "error"])
    rows = []
    for (member, score), (name, fn, queue, flow, lost, error) in zip(entries, pipe.execute()):
        err = codec.unpack_error(error)
        rows.append({"id": member.decode(), "name": (name or b"").decode(),
                     "fn": (fn or b"").decode(), "queue": (queue or b"").decode(),
                     "flow": (flow or b"").decode(), "lost": int(lost or 0),
                     "since": score / 1000, "reason": str(err) if err else ""})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no quarantined tasks")
    for r in rows:
        click.echo(f"{r['id']}  {r['name']:<20} queue={r['queue']:<14} lost={r['lost']}"
                   f"  flow={r['flow']}  {r['reason']}")


@dlq.command("retry")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every quarantined task.")
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
def dlq_retry(task_ids: tuple[str, ...], every: bool, redis_url: str | None,
              namespace: str | None) -> None:
    """Put quarantined tasks back into their queues (their loss count reset)."""
    settings = _settings(redis_url=redis_url, namespace=namespace)
    keys = Keys(settings.namespace)
    client = _client(settings)
    scripts = Scripts(client, keys)
    for task_id in _dlq_ids(client, keys, task_ids, every):
        queue = client.hget(keys.task(task_id), "queue")
        if queue is None or not scripts.dlq_retry(task_id, queue.decode()):
            raise click.ClickException(f"task {task_id} is not quarantined")
        click.echo(f"task {task_id} re-queued on {queue.decode()}")


@dlq.command("purge")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every quarantined task.")
@click.option("--redis-url", help=URL_HELP)
@click.option("--namespace", help=NS_HELP)
def dlq_purge(task_ids: tuple[str, ...], every: bool, redis_url: str | None,
              namespace: str | None) -> None:
    """Give quarantined tasks up: they fail for good, their dependents too."""
    settings = _settings(redis_url=redis_url, namespace=namespace)
    keys = Keys(settings.namespace)
    client = _client(settings)
    scripts = Scripts(client, keys)
    for task_id in _dlq_ids(client, keys, task_ids, every):
        flow = client.hget(keys.task(task_id), "flow")
        if flow is None or not scripts.dlq_purge(task_id, flow.decode(),
                                                 int(settings.result_ttl * 1000)):
            raise click.ClickException(f"task {task_id} is not quarantined")
        click.echo(f"task {task_id} failed for good")


if __name__ == "__main__":
    sys.exit(main())
