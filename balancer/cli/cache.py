"""`balancer cache ls|rm`: the task results kept by ``cache_for``, cache policies and
Prefect 1 targets (balancer/cached.py)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import click

from balancer import cached
from balancer.cli.common import Cluster, cluster_options, echo


@click.group()
def cache() -> None:
    """Cached task results: listed, or deleted so that their task runs again.

    A result is kept under its task's cache key (`cache_key=`, a Prefect 1 `target=`,
    else the task's import path) and the digest of the inputs it stands for, until its
    `cache_for` (a target: for good, until deleted here or replaced by a run with
    `refresh_cache=True`).
    """


@cache.command("ls")
@click.option("--match", help="Only results whose cache key or label matches this glob"
                              " ('etl.*', 'reports/2026-*').")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cluster_options
def cache_ls(match: str | None, as_json: bool, cluster: Cluster) -> None:
    """List the cached results not yet expired, soonest to expire first: cache key, label
    (a target as rendered, what a cache key function returned), digest of the inputs,
    expiry and size."""
    rows = [r for view in cluster.each()
            for r in cached.listed(view.client, view.keys, view.scripts.now_ms())
            if match is None or r.matches(match)]
    if as_json:
        echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        echo("no cached results" + (f" matching {match!r}" if match else ""))
    for r in rows:
        label = f"  label={r.label}" if r.label else ""
        echo(f"{r.key}{label}  digest={r.digest[:12]}  expires={_when(r.expires_ms)}"
             f"  {r.size} bytes" + ("" if r.size else " (gone)"))


@cache.command("rm")
@click.argument("names", nargs=-1)
@click.option("--match", help="Every result whose cache key or label matches this glob.")
@click.option("--all", "every", is_flag=True, help="Every cached result.")
@cluster_options
def cache_rm(names: tuple[str, ...], match: str | None, every: bool,
             cluster: Cluster) -> None:
    """Delete the cached results NAMES name (a cache key: every result under it; or a
    label: a target as rendered), or those --match or --all select. The next run of
    their task runs, and stores a new result."""
    if sum((bool(names), match is not None, every)) != 1:
        raise click.UsageError("name cache keys or labels, or give --match GLOB, or --all")
    named = set(names)
    chosen: list[cached.CachedResult] = []
    total = 0
    for view in cluster.each():
        rows = [r for r in cached.listed(view.client, view.keys, view.scripts.now_ms())
                if every or (match is not None and r.matches(match))
                or r.key in named or (r.label and r.label in named)]
        chosen += rows
        total += cached.forget(view.client, view.keys, rows)
    unknown = sorted(named - {r.key for r in chosen} - {r.label for r in chosen})
    for name in unknown:
        echo(f"no cached result under {name!r} (`balancer cache ls` lists them)", err=True)
    echo(f"deleted {total} cached result{'' if total == 1 else 's'}")
    if unknown:
        raise SystemExit(1)


def _when(ms: int) -> str:
    """An expiry as UTC, and how far off ("in 3h"): a target's is decades away."""
    try:
        at = datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        at = f"{ms} ms"
    left = ms / 1000 - time.time()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size:
            return f"{at} (in {left / size:.0f}{unit})"
    return f"{at} (in {max(0, left):.0f}s)"
