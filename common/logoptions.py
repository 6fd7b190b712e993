"""The --log-level and --log-format options of both commands, `balancer` and `worker`.

Their own module, outside the `balancer.cli` package: `worker start` (and each pool process
it spawns, which imports it again) would otherwise import every `balancer` command, the
dispatcher included, a fifth of its start-up time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def log_level_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--log-level", default="INFO", show_default=True,
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))(fn)


def log_format_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--log-format", type=click.Choice(["text", "json"]),
        help="Log lines as text or JSON (one object per line, with task and worker ids as"
             " fields). Default: $BALANCER_LOG_FORMAT or text.")(fn)
