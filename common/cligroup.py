"""The command group of both command lines (`balancer`, `worker`)."""

from __future__ import annotations

from typing import Any

import click
from balancer.common.printable import lines


class EscapingGroup(click.Group):
    """A command group whose errors are shown escaped, as the commands' output is
    (``balancer.cli.common.echo``): an error may name what others chose (a queue, a key, a
    flow), and a control character in it must not reach the terminal."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            setattr(exc, "message", lines(exc.message))  # noqa: B010 (click types it Final)
            raise
