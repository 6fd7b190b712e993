"""`balancer acl`: the Redis ACL users of the three roles, as commands to run."""

from __future__ import annotations

import click

from balancer.cli.common import NS_HELP
from balancer.common.acl import ROLES, setuser_lines
from balancer.common.settings import Settings, SettingsError


@click.command("acl")
@click.option("--namespace", help=NS_HELP)
@click.option("--role", "roles", multiple=True, type=click.Choice(list(ROLES)),
              help="Only this role (repeatable). Default: worker, dispatcher and client.")
def acl(namespace: str | None, roles: tuple[str, ...]) -> None:
    """Print one ACL SETUSER command per role: a Redis user NAMESPACE-ROLE allowed only
    the commands and keys of NAMESPACE that role uses. Nothing is sent to Redis.

    \b
    Run them as an admin user, then give each user its password:
      balancer acl | redis-cli -h HOST --user admin --askpass
      redis-cli -h HOST --user admin --askpass ACL SETUSER balancer-worker '>PASSWORD'
    and start each process with its user in the URL:
      BALANCER_REDIS_URL=redis://balancer-worker:PASSWORD@HOST:6379/0 worker start

    They leave passwords alone: run them again after an upgrade (the commands follow
    the code). The dispatcher's user also serves `balancer status`, `flow`, `queue` and
    `dlq`. A client under its user submits small flows through the dispatcher (it may
    not take standing offers).
    """
    try:
        settings = Settings.from_env(namespace=namespace)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    for line in setuser_lines(settings.namespace, list(roles) or None):
        click.echo(line)
