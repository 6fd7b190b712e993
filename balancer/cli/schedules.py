"""`balancer schedule add|ls|rm`: flows run by the cluster's leader on a schedule."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from balancer.cli.common import Cluster, cluster_options, echo, parameters
from balancer.common.importpath import _module_name_in, importing_tasks
from balancer.flow import Flow, FlowError
from balancer.schedule_fire import shown
from balancer.schedule_store import ScheduleRecord, flow_states, read_all, register, remove
from balancer.schedules import CronSchedule, IntervalSchedule, Schedule, ScheduleError


@click.group()
def schedule() -> None:
    """Run flows on a schedule: the leader dispatcher fires each due time once."""


def load_flow(target: str) -> Flow:
    """The Flow named ``module:attribute`` or ``path/to/file.py:attribute``, imported as
    a worker would import its tasks (a top-level ``flow.run()`` in it does nothing)."""
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise click.BadParameter(f"{target!r} is not of the form module:flow or"
                                 " path/to/file.py:flow", param_hint="FLOW")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        with importing_tasks():
            if where.endswith(".py") or os.sep in where:
                if not Path(where).is_file():
                    raise click.BadParameter(f"no file {where}", param_hint="FLOW")
                name = _module_name_in(where, cwd)
                if name.endswith(".py"):  # outside this folder: named by its path
                    spec = importlib.util.spec_from_file_location(name, where)
                    assert spec is not None and spec.loader is not None
                    module: Any = importlib.util.module_from_spec(spec)
                    sys.modules[name] = module
                    spec.loader.exec_module(module)
                else:
                    module = importlib.import_module(name)
            else:
                module = importlib.import_module(where)
    except click.BadParameter:
        raise
    except Exception as exc:
        raise click.BadParameter(f"cannot import {where!r}: {type(exc).__name__}: {exc}",
                                 param_hint="FLOW") from None
    found = getattr(module, attr, None)
    if not isinstance(found, Flow):
        raise click.BadParameter(f"{where!r} has no Flow named {attr!r}"
                                 + (f" (it is a {type(found).__name__})" if found is not None
                                    else ""), param_hint="FLOW")
    return found


def _date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date such as 2026-01-31T09:00"
                                 " (UTC unless it says +HH:MM)", param_hint=option) from None


@schedule.command("add")
@click.argument("flow_target", metavar="FLOW")
@click.option("--cron", help='A cron expression, e.g. "*/5 * * * *" (6 fields: seconds first).')
@click.option("--every", type=float, help="An interval in seconds (at least 1).")
@click.option("--tz", help="Time zone of --cron (an IANA name, e.g. Europe/Paris). Default UTC.")
@click.option("--start", help="First due time of --every, or when --cron starts (ISO date).")
@click.option("--end", help="No due time after this (ISO date).")
@click.option("--id", "schedule_id", help="The schedule's id. Default: the flow's name.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter's value for every run (JSON, else a string). Repeatable.")
@cluster_options
def schedule_add(flow_target: str, cron: str | None, every: float | None, tz: str | None,
                 start: str | None, end: str | None, schedule_id: str | None,
                 params: tuple[str, ...], cluster: Cluster) -> None:
    """Register FLOW (module:flow or file.py:flow, imported from this folder) to run on
    --cron or --every, or on the flow's own schedule (Flow(..., schedule=...)).
    Registering the same id again replaces it."""
    if cron is not None and every is not None:
        raise click.UsageError("give --cron or --every, not both")
    flow = load_flow(flow_target)
    start_date, end_date = _date(start, "--start"), _date(end, "--end")
    try:
        if cron is not None:
            sched: Schedule = CronSchedule(cron, start_date, end_date, tz=tz)
        elif every is not None:
            if tz is not None:
                raise click.UsageError("--tz applies to --cron only")
            sched = IntervalSchedule(start_date, timedelta(seconds=every), end_date)
        elif isinstance(flow.schedule, Schedule):
            sched = flow.schedule
        else:
            raise click.UsageError(f"flow {flow.name!r} has no schedule: give --cron or"
                                   " --every")
        sid, due, kept = register(cluster.client, cluster.settings, flow, sched,
                                  schedule_id, parameters(params))
    except OverflowError:
        raise click.BadParameter(f"{every} is too large", param_hint="--every") from None
    except (ScheduleError, FlowError) as exc:
        raise click.ClickException(str(exc)) from None
    echo(f"schedule {sid}: flow {flow.name!r}, {sched.describe()}, next due"
               f" {shown(due)}" + (" (kept from its earlier registration)" if kept else ""))


@schedule.command("ls")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def schedule_ls(cluster: Cluster, as_json: bool) -> None:
    """List schedules: next due time (UTC), runs fired and skipped, the last run."""
    found = read_all(cluster.client, cluster.keys)
    records = [r for _, r in found if isinstance(r, ScheduleRecord)]
    states = dict(zip([r.last_flow for r in records],
                      flow_states(cluster.client, cluster.keys, [r.last_flow for r in records])))
    rows: list[dict[str, Any]] = []
    for sid, r in found:
        if isinstance(r, ScheduleError):
            rows.append({"id": sid, "error": str(r)})
            continue
        rows.append({
            "id": sid, "flow": r.flow_name, "schedule": r.schedule.describe(),
            "next_due": shown(r.next_due) if math.isfinite(r.next_due) else None,
            "fired": r.fired, "skipped": r.skipped, "parameters": r.parameters,
            "last_flow": r.last_flow or None,
            "last_due": shown(r.last_due) if r.last_due is not None else None,
            "last_state": (states.get(r.last_flow) or "expired") if r.last_flow else None,
        })
    if as_json:
        echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        echo("no schedules (add one with: balancer schedule add module:flow --cron ...)")
        return
    header = ("ID", "FLOW", "SCHEDULE", "NEXT DUE (UTC)", "FIRED", "SKIPPED", "LAST RUN")
    table = [header]
    for row in rows:
        if "error" in row:
            table.append((row["id"], "-", f"unreadable: {row['error']}", "-", "-", "-", "-"))
            continue
        last = f"{row['last_flow']} {row['last_state']}" if row["last_flow"] else "-"
        table.append((row["id"], row["flow"], row["schedule"], row["next_due"] or "ended",
                      str(row["fired"]), str(row["skipped"]), last))
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for line in table:
        echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())


@schedule.command("rm")
@click.argument("schedule_id", metavar="ID")
@cluster_options
def schedule_rm(schedule_id: str, cluster: Cluster) -> None:
    """Remove a schedule: no run is fired for it any more (runs fired stay)."""
    if not remove(cluster.client, cluster.keys, schedule_id):
        raise click.ClickException(f"no schedule with id {schedule_id!r}"
                                   " (balancer schedule ls lists them)")
    echo(f"schedule {schedule_id} removed")
