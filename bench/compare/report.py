"""One table of every figure per system with our ratio to the best peer; JSON; a PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compare.base import Layout

Results = dict[str, dict[str, Any]]  # system -> workload -> figures (or {"error": ...})


@dataclass(frozen=True)
class Row:
    label: str
    workload: str
    field: str
    better: str | None  # "high", "low", or None: no ratio
    fmt: str = "{:.2f}"


def layout_rows(layouts: Sequence[Layout], fractions: Sequence[float]) -> list[Row]:
    """Rows of the workloads run on every layout of ``--layouts`` (issue 17)."""
    out: list[Row] = []
    for layout in layouts:
        t, m, lb = f"throughput@{layout.label}", f"memory@{layout.label}", layout.label
        out += [
            Row(f"1 {lb} enqueue rate, tasks/s", t, "enqueue_per_s", "high", "{:.0f}"),
            Row(f"1 {lb} throughput, tasks/s", t, "tasks_per_s", "high", "{:.0f}"),
            Row(f"1 {lb} Redis cmds/task", t, "redis_cmds_per_task", "low", "{:.1f}"),
            Row(f"1 {lb} Redis CPU/task, ms", t, "redis_cpu_ms_per_task", "low", "{:.3f}"),
            Row(f"1 {lb} CPU/task, ms", t, "cpu_ms_per_task", "low", "{:.3f}"),
        ]
        for fraction in fractions:
            key, pct = f"load{round(fraction * 100)}@{lb}", round(fraction * 100)
            out += [Row(f"L {lb} {pct}% load, tasks/s", key, "achieved_per_s", None, "{:.0f}"),
                    Row(f"L {lb} {pct}% p50, ms", key, "p50_ms", "low"),
                    Row(f"L {lb} {pct}% p99, ms", key, "p99_ms", "low"),
                    Row(f"L {lb} {pct}% submit late p99, ms", key, "late_p99_ms", None)]
        out += [Row(f"M {lb} worker, MB", m, "worker_mb", "low", "{:.1f}"),
                Row(f"M {lb} dispatcher, MB", m, "dispatcher_mb", None, "{:.1f}"),
                Row(f"M {lb} per slot, MB", m, "mb_per_slot", "low", "{:.1f}"),
                Row(f"M {lb} per slot (PSS), MB", m, "pss_mb_per_slot", "low", "{:.1f}")]
    return out


FIXED_ROWS = [
    Row("2 latency p50, ms", "latency", "p50_ms", "low"),
    Row("2 latency p99, ms", "latency", "p99_ms", "low"),
    Row("2 Redis CPU/task, ms", "latency", "redis_cpu_ms_per_task", "low", "{:.3f}"),
    Row("S submit, 1 task/call, calls/s", "submit", "calls_per_s", "high", "{:.0f}"),
    Row("S end to end, tasks/s", "submit", "tasks_per_s", "high", "{:.0f}"),
    Row("3 makespan, s", "makespan", "makespan_s", "low"),
    Row("3 makespan / greedy", "makespan", "over_greedy", "low", "{:.3f}"),
    Row("3 makespan / optimal", "makespan", "over_optimal", "low", "{:.3f}"),
    Row("3b makespan, s", "prefetch_trap", "makespan_s", "low"),
    Row("3b makespan / greedy", "prefetch_trap", "over_reference", "low", "{:.3f}"),
    Row("4 busy-host share", "uneven", "share_busy_host", None),
    Row("4 ideal busy share", "uneven", "ideal_busy_share", None),
    Row("4 makespan, s", "uneven", "makespan_s", "low"),
    Row("4 makespan / ideal", "uneven", "over_ideal", "low", "{:.3f}"),
    Row("5 inversions (aging off)", "priority", "inversions", "low", "{:.0f}"),
    Row("5 worst low wait, s", "priority", "worst_low_wait_s", None),
    Row("5 worst low wait aging, s", "priority_aging", "worst_low_wait_s", None),
    Row("5 inversions with aging", "priority_aging", "inversions", None, "{:.0f}"),
    Row("6 flow submit, s", "layered", "submit_s", None),
    Row("6 flow total, s", "layered", "total_s", None),
    Row("6 flow tasks/s", "layered", "tasks_per_s", None, "{:.0f}"),
    Row("6 flow Redis cmds/task", "layered", "redis_cmds_per_task", None, "{:.1f}"),
    Row("6 idle cmds/s", "idle", "cmds_per_s", None, "{:.1f}"),
    Row("7 assignments/s", "dispatcher_scale", "assignments_per_s", None, "{:.0f}"),
    Row("7 dispatcher CPU, % core", "dispatcher_scale", "dispatcher_cpu_share", None,
        "{:.0%}"),
    Row("7 dispatcher CPU, idle", "dispatcher_scale", "dispatcher_cpu_share_heartbeats_only",
        None, "{:.0%}"),
    Row("7 queued at end", "dispatcher_scale", "queued_at_end", None, "{:.0f}"),
]


def rows(layouts: Sequence[Layout], fractions: Sequence[float]) -> list[Row]:
    return layout_rows(layouts, fractions) + FIXED_ROWS


def value(results: Results, system: str, row: Row) -> float | str | None:
    figures = results.get(system, {}).get(row.workload)
    if figures is None:
        return None
    if "error" in figures:
        return "ERR"
    v = figures.get(row.field)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def partial(results: Results, system: str, row: Row) -> bool:
    return bool(results.get(system, {}).get(row.workload, {}).get("partial"))


def ratio(results: Results, systems: list[str], row: Row) -> str:
    ours = value(results, "ours", row)
    peers = [v for s in systems if s != "ours"
             if isinstance(v := value(results, s, row), float) and not math.isnan(v)]
    if row.better is None or not isinstance(ours, float) or not peers:
        return ""
    best = max(peers) if row.better == "high" else min(peers)
    if best == 0:
        return "=" if ours == 0 else "inf"
    return f"{ours / best:.2f}"


def cell(v: float | str | None, fmt: str) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return "nan" if math.isnan(v) else fmt.format(v)


def table(results: Results, systems: list[str], row_list: Sequence[Row]) -> str:
    width = max(11, *(len(s) + 1 for s in systems))
    label = max(28, *(len(r.label) + 1 for r in row_list))
    head = f"{'figure':<{label}}" + "".join(f"{s:>{width}}" for s in systems) + f"{'ours/best':>11}"
    lines = [head, "-" * len(head)]
    for row in row_list:
        cells = [cell(value(results, s, row), row.fmt) + ("*" if partial(results, s, row)
                                                          else "") for s in systems]
        if all(c == "n/a" for c in cells):
            continue
        lines.append(f"{row.label:<{label}}" + "".join(f"{c:>{width}}" for c in cells)
                     + f"{ratio(results, systems, row):>11}")
    return "\n".join(lines)


NOTES = """\
Medians over the runs (--runs) of each figure; ratios are of the medians.
ours/best = our figure / the best peer's (best = highest tasks/s, lowest otherwise).
n/a: not applicable or not run; ERR: failed (see the JSON); *: cut at the time budget,
figures of the tasks done by then. Cmds/task: every command the system's private Redis ran
during the throughput run (Lua-invoked ones included), idle traffic included. Redis
CPU/task: the server's used_cpu_sys + used_cpu_user over the run / tasks; CPU/task: the
workers' and dispatcher's processes (pool children included), the client's not.
L: single no-ops as a Poisson stream at that share of the capacity the layout's throughput
run measured, one per submit call from a separate process; latency from the call to the
harness seeing the task's record (as in 2); "submit late": how far behind its schedule a
call started (a submitter that cannot keep up). M: resident memory (RSS summed over each
process tree) of the idle workers after their throughput and load runs; per slot counts
the dispatcher in. S: single-task submit calls back to back (ours: a one-task Flow each).
4: one CPU task size for all, calibrated once per run; share = tasks run on the busy core.
5: an inversion is a low task started while a high one enqueued earlier still waited; the
worst low wait has no ratio (a system that ignores priorities "wins" it); peers have no
aging."""


def errors(results: Results) -> list[str]:
    return [f"{system} {workload}: {figures['error'].splitlines()[0][:160]}"
            for system, per in results.items() for workload, figures in per.items()
            if isinstance(figures, dict) and "error" in figures]


def save_json(path: Path, meta: dict[str, Any], results: Results,
              **extra: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results, **extra}, indent=2,
                               default=str))


def markdown_table(results: Results, systems: list[str], row_list: Sequence[Row]) -> str:
    """The same table as ``table``, in markdown."""
    head = ["figure", *systems, "ours/best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in row_list:
        cells = [cell(value(results, s, row), row.fmt) + ("*" if partial(results, s, row)
                                                          else "") for s in systems]
        if all(c == "n/a" for c in cells):
            continue
        lines.append("| " + " | ".join([row.label, *cells, ratio(results, systems, row)])
                     + " |")
    return "\n".join(lines)


def plot(path: Path, results: Results, systems: list[str], row_list: Sequence[Row]) -> bool:
    """Bar charts of the compared figures; False when there is nothing to draw or
    matplotlib is not installed."""
    rows = [r for r in row_list if r.better is not None
            and any(isinstance(value(results, s, r), float) for s in systems)]
    if not rows:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(rows) / cols), cols,
                             figsize=(4.2 * cols, 3.0 * math.ceil(len(rows) / cols)),
                             squeeze=False)
    for ax, row in zip(axes.flat, rows):
        names = [s for s in systems if isinstance(value(results, s, row), float)]
        heights = [float(value(results, s, row)) for s in names]  # type: ignore[arg-type]
        colors = ["tab:green" if s == "ours" else "tab:gray" for s in names]
        ax.bar(names, heights, color=colors)
        positive = [h for h in heights if h > 0]
        if positive and max(positive) > 20 * min(positive):
            ax.set_yscale("log")
        ax.set_title(f"{row.label} ({'higher' if row.better == 'high' else 'lower'} is better)",
                     fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
