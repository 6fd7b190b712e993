"""Medians over ``--runs`` and the goals of issue 17 as ratios to the best peer.

Every run is one pass of every system; the figure reported is the median, per system and
figure, over the runs where that workload did not fail. Ratios are of medians.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.compare.base import Layout

Results = dict[str, dict[str, Any]]  # system -> workload -> figures (or {"error": ...})


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def median_of(values: Sequence[Any]) -> Any:
    """The median of numbers; dicts key by key; anything else: the first value given."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(_is_number(v) for v in present):
        finite = [float(v) for v in present if not math.isnan(v)]
        return statistics.median(finite) if finite else math.nan
    if all(isinstance(v, dict) for v in present):
        keys = dict.fromkeys(k for v in present for k in v)
        return {k: median_of([v.get(k) for v in present]) for k in keys}
    return present[0]


def median_results(runs: Sequence[Results]) -> Results:
    """Per system and workload, the median of each figure over the runs it succeeded in
    (``runs_ok`` of ``runs``); a workload that failed every time keeps its first error."""
    out: Results = {}
    systems = dict.fromkeys(s for run in runs for s in run)
    for system in systems:
        workloads = dict.fromkeys(w for run in runs for w in run.get(system, {}))
        out[system] = {}
        for workload in workloads:
            tries = [run[system][workload] for run in runs if workload in run.get(system, {})]
            good = [f for f in tries if "error" not in f]
            if not good:
                out[system][workload] = tries[0]
                continue
            merged = median_of(good)
            merged["runs_ok"] = len(good)
            merged["runs"] = len(tries)
            merged["partial"] = any(f.get("partial") for f in good)
            out[system][workload] = merged
    return out


@dataclass(frozen=True)
class Goal:
    label: str
    workload: str
    field: str
    better: str  # "high" or "low"
    target: float | None  # ours / best peer must be >= (high) or <= (low) this; None: report


def goals(layouts: Sequence[Layout], fractions: Sequence[float]) -> list[Goal]:
    """The figures issue 17 sets goals on, for the layouts and load levels of this run."""
    out = [Goal("p99 single task, idle, ms", "latency", "p99_ms", "low", 1.0),
           Goal("p50 single task, idle, ms", "latency", "p50_ms", "low", 0.8),
           Goal("submit, single-task calls/s", "submit", "calls_per_s", "high", 1.0)]
    for layout in layouts:
        target = 3.0 if (layout.workers, layout.slots) == (2, 1) else 2.0
        out.append(Goal(f"throughput {layout.label}, tasks/s", f"throughput@{layout.label}",
                        "tasks_per_s", "high", target))
    for layout in layouts:
        for fraction in fractions:
            key = load_key(fraction, layout)
            pct = round(fraction * 100)
            out += [Goal(f"load {pct}% {layout.label} p50, ms", key, "p50_ms", "low", None),
                    Goal(f"load {pct}% {layout.label} p99, ms", key, "p99_ms", "low", None)]
    for layout in layouts:
        out.append(Goal(f"memory/slot {layout.label}, MB", f"memory@{layout.label}",
                        "mb_per_slot", "low", 1.0))
    for layout in layouts:
        out.append(Goal(f"Redis CPU/task {layout.label}, ms", f"throughput@{layout.label}",
                        "redis_cpu_ms_per_task", "low", None))
    return out


def load_key(fraction: float, layout: Layout) -> str:
    return f"load{round(fraction * 100)}@{layout.label}"


def figure(results: Results, system: str, workload: str, field: str) -> float | None:
    figures = results.get(system, {}).get(workload)
    if not isinstance(figures, dict) or "error" in figures:
        return None
    v = figures.get(field)
    return float(v) if _is_number(v) and not math.isnan(v) else None


def best_peer(results: Results, systems: Sequence[str], workload: str, field: str,
              better: str) -> tuple[str, float] | None:
    peers = [(s, v) for s in systems if s != "ours"
             if (v := figure(results, s, workload, field)) is not None]
    if not peers:
        return None
    pick = max if better == "high" else min
    return pick(peers, key=lambda sv: sv[1])


def ratio(ours: float, best: float) -> float:
    if best == 0:
        return 1.0 if ours == 0 else math.inf
    return ours / best


@dataclass(frozen=True)
class Verdict:
    goal: Goal
    ours: float | None
    peer: str | None
    best: float | None
    ratio: float | None

    @property
    def status(self) -> str:
        if self.ratio is None:
            return "n/a"
        if self.goal.target is None:
            return "-"
        ok = (self.ratio >= self.goal.target if self.goal.better == "high"
              else self.ratio <= self.goal.target)
        return "met" if ok else "not met"

    def as_dict(self) -> dict[str, Any]:
        return {"goal": self.goal.label, "workload": self.goal.workload,
                "field": self.goal.field, "better": self.goal.better,
                "target": self.goal.target, "ours": self.ours, "best_peer": self.peer,
                "best": self.best, "ratio": self.ratio, "status": self.status}


def verdicts(results: Results, systems: Sequence[str], goal_list: Sequence[Goal]
             ) -> list[Verdict]:
    out = []
    for g in goal_list:
        ours = figure(results, "ours", g.workload, g.field)
        best = best_peer(results, systems, g.workload, g.field, g.better)
        r = ratio(ours, best[1]) if ours is not None and best is not None else None
        out.append(Verdict(g, ours, best[0] if best else None, best[1] if best else None, r))
    return out


def _num(v: float | None, fmt: str = "{:.3g}") -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 1000 else fmt.format(v)


def _target(g: Goal) -> str:
    if g.target is None:
        return "report"
    return f"{'>=' if g.better == 'high' else '<='} {g.target:g}x"


def goals_rows(vs: Sequence[Verdict]) -> list[list[str]]:
    return [[v.goal.label, _num(v.ours), f"{v.peer} {_num(v.best)}" if v.peer else "n/a",
             "n/a" if v.ratio is None else f"{v.ratio:.2f}", _target(v.goal), v.status]
            for v in vs]


GOALS_HEAD = ["goal (issue 17)", "ours", "best peer", "ours/best", "target", "status"]


def goals_table(vs: Sequence[Verdict]) -> str:
    rows = [GOALS_HEAD, *goals_rows(vs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(GOALS_HEAD))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
