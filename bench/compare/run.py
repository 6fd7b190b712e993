"""Run the side-by-side benchmark and print one table (issues 4 and 17).

    python -m bench.compare.run [--quick] [--systems ours,celery,...] [--layouts 2x1,2x4]
                                [--runs 3] [--out bench/results]

Every system gets a private redis-server per worker layout (stopped after), the same
worker layout and the same completion watch on a separate record Redis. A system whose
library is not installed is reported and skipped (``pip install -e '.[bench]'``). Each of
``--runs`` passes every system once, in turn; the table shows medians over the runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from bench.compare import report, scaling, summary, workloads
from bench.compare.base import ROOT, Layout, PrivateRedis, System, parse_layouts
from bench.compare.records import Records
from bench.compare.workloads import Config, Figures

# name -> (module, class)
SYSTEMS = {
    "ours": ("bench.compare.ours", "Ours"),
    "celery": ("bench.compare.celery_app", "CelerySystem"),
    "celery-fair": ("bench.compare.celery_app", "CeleryFair"),
    "dramatiq": ("bench.compare.dramatiq_app", "DramatiqSystem"),
    "rq": ("bench.compare.rq_app", "RQSystem"),
    "arq": ("bench.compare.arq_app", "ArqSystem"),
    "huey": ("bench.compare.huey_app", "HueySystem"),
}

Workload = Callable[[System, Records, redis.Redis, Config], Figures]
A, B = Layout(2, 1), Layout(2, 2)
DEFAULT_LAYOUTS = "2x1,2x4,4x2"


@dataclass(frozen=True)
class Step:
    """One workload on one layout; ``key`` names its figures in the results."""

    name: str  # what --workloads selects
    key: str
    layout: Layout
    run: Callable[[Session, dict[str, Figures]], Figures]


def _plain(fn: Workload) -> Callable[[Session, dict[str, Figures]], Figures]:
    def run(session: Session, out: dict[str, Figures]) -> Figures:
        assert session.broker is not None
        return fn(session.system, session.rec, session.broker, session.cfg)
    return run


def _load(layout: Layout, fraction: float) -> Callable[[Session, dict[str, Figures]], Figures]:
    def run(session: Session, out: dict[str, Figures]) -> Figures:
        assert session.broker is not None
        measured = out.get(f"throughput@{layout.label}", {})
        if "tasks_per_s" not in measured:
            raise RuntimeError(f"no capacity on {layout.label}: the load workload needs the"
                               " throughput workload on the same layout in the same run")
        return scaling.under_load(session.system, session.rec, session.broker, session.cfg,
                                  layout, float(measured["tasks_per_s"]), fraction)
    return run


def _memory(layout: Layout) -> Callable[[Session, dict[str, Figures]], Figures]:
    return lambda session, out: scaling.memory(session.system, layout)


def plan(layouts: list[Layout], fractions: tuple[float, ...]) -> list[Step]:
    """Each layout's throughput, load and memory; the single-task workloads on 2 x 1 (after
    that layout's block, on the same workers, when 2 x 1 is one of ``layouts``); then the
    workloads of issue 4 on their own layouts."""
    singles = [Step("latency", "latency", A, _plain(workloads.latency)),
               Step("submit", "submit", A, _plain(workloads.submit_singles)),
               Step("prefetch_trap", "prefetch_trap", A, _plain(workloads.prefetch_trap))]
    steps: list[Step] = []
    for layout in sorted(layouts, key=lambda lay: lay != A):
        label = layout.label
        steps.append(Step("throughput", f"throughput@{label}", layout,
                          _plain(workloads.throughput)))
        steps += [Step("load", summary.load_key(f, layout), layout, _load(layout, f))
                  for f in fractions]
        steps.append(Step("memory", f"memory@{label}", layout, _memory(layout)))
        if layout == A:
            steps += singles
    if A not in layouts:
        steps = singles + steps
    return [
        *steps,
        Step("makespan", "makespan", B, _plain(workloads.makespan)),
        Step("uneven", "uneven", Layout(2, 1, pin=True), _plain(workloads.uneven)),
        Step("priority", "priority", Layout(2, 1, priority=True), _plain(workloads.priority)),
        Step("priority_aging", "priority_aging", Layout(2, 1, priority=True, aging=True),
             _plain(workloads.priority)),
    ]


SHARED = ["throughput", "load", "memory", "latency", "submit", "prefetch_trap", "makespan",
          "uneven", "priority", "priority_aging"]
OURS_ONLY = ["layered", "idle", "dispatcher_scale"]
WORKLOADS = SHARED + OURS_ONLY


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def applies(system: System, name: str, layout: Layout) -> bool:
    return (not layout.priority or system.has_priority) and (not layout.aging
                                                             or system.has_aging)


class Session:
    """A system running one layout on a private Redis; restarted when the layout changes
    or after a workload failed (its leftovers must not leak into the next one)."""

    def __init__(self, system: System, logdir: Path, rec: Records, cfg: Config) -> None:
        self.system, self.logdir, self.rec, self.cfg = system, logdir, rec, cfg
        self.layout: Layout | None = None
        self.server: PrivateRedis | None = None
        self.broker: redis.Redis | None = None

    def ensure(self, layout: Layout) -> redis.Redis:
        if self.layout == layout and self.broker is not None:
            return self.broker
        self.close()
        self.server = PrivateRedis(self.logdir).start()
        self.broker = redis.Redis.from_url(self.server.url)
        indices = self.system.start(layout, self.server.url)
        self.layout = layout
        workloads.ready(self.system, indices, self.rec, layout)
        return self.broker

    def close(self) -> None:
        try:
            self.system.stop()
        finally:
            if self.broker is not None:
                self.broker.close()
            if self.server is not None:
                self.server.stop()
            self.layout, self.server, self.broker = None, None, None


def run_system(system: System, logdir: Path, rec: Records, cfg: Config, steps: list[Step],
               only: set[str] | None = None) -> dict[str, Figures]:
    out: dict[str, Figures] = {}
    session = Session(system, logdir, rec, cfg)
    try:
        for step in steps:
            if not applies(system, step.name, step.layout) or (only and step.name not in only):
                continue
            started, name = time.monotonic(), step.key
            try:
                session.ensure(step.layout)
                out[name] = step.run(session, out)
                log(f"{system.name} {name}: {short(out[name])}"
                    f" ({time.monotonic() - started:.0f}s)")
                if out[name].get("partial"):
                    session.close()  # its backlog must not leak into the next workload
            except Exception as exc:  # one failed workload must not stop the comparison
                out[name] = {"error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()}
                log(f"{system.name} {name}: FAILED {type(exc).__name__}: {exc}")
                session.close()
        if system.name == "ours":
            out.update(ours_only(system, session, rec, cfg, only))
    finally:
        session.close()
    return out


def ours_only(system: System, session: Session, rec: Records, cfg: Config,
              only: set[str] | None = None) -> dict[str, Figures]:
    from bench.compare import ours_workloads
    from bench.compare.ours import Ours

    assert isinstance(system, Ours)
    out: dict[str, Figures] = {}
    steps: list[tuple[str, Layout, Callable[[], Figures]]] = [
        ("layered", B, lambda: ours_workloads.layered(system, cfg)),
        ("idle", B, lambda: ours_workloads.idle(system, B, cfg)),
        ("dispatcher_scale", Layout(0, 1), lambda: ours_workloads.dispatcher_scale(system, cfg)),
    ]
    for name, layout, fn in steps:
        if only and name not in only:
            continue
        try:
            session.ensure(layout)
            out[name] = fn()
            log(f"ours {name}: {short(out[name])}")
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()}
            log(f"ours {name}: FAILED {type(exc).__name__}: {exc}")
            session.close()
    return out


def short(figures: Figures) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in figures.items() if not isinstance(v, dict))


def revision() -> str:
    """The product's git revision (``BENCH_REVISION`` for a copy outside git)."""
    if os.environ.get("BENCH_REVISION"):
        return os.environ["BENCH_REVISION"]
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def load(name: str, logdir: Path, record_url: str) -> System:
    module, cls = SYSTEMS[name]
    return getattr(importlib.import_module(module), cls)(logdir, record_url)  # type: ignore[no-any-return]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every workload small")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, of: {', '.join(SYSTEMS)}")
    parser.add_argument("--workloads", default="",
                        help=f"comma-separated subset, of: {', '.join(WORKLOADS)} (default all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="folder for <timestamp>.json and .png")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs")
    parser.add_argument("--layouts", default=DEFAULT_LAYOUTS,
                        help="WORKERSxSLOTS list for the throughput, load and memory"
                             f" workloads (default {DEFAULT_LAYOUTS})")
    parser.add_argument("--submit", choices=sorted(workloads.SUBMIT_MODES), default="single",
                        help="how the throughput workload submits: "
                             + "; ".join(f"{k}: {v}" for k, v in
                                         workloads.SUBMIT_MODES.items()))
    parser.add_argument("--runs", type=int, default=3,
                        help="passes of every system; the table shows medians (default 3)")
    args = parser.parse_args(argv)
    try:
        args.layouts = parse_layouts(args.layouts)
    except ValueError as exc:
        parser.error(f"--layouts: {exc}")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1 (got {args.runs})")
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    args.workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
    unknown = sorted(args.workloads - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
    return args


# Said under the goals of a --quick run: its throughput run lasts a fraction of a second
# (300 tasks), its latency is 30 singles (p99 their maximum), so a moment's noise decides
# a ratio: a quick run here put our throughput on 2 x 1 at 0.38 of Huey's, a full run of
# the same code minutes later at 0.67.
QUICK_WARNING = ("--quick: every workload is cut small (300 throughput tasks, 30 singles):"
                 " these figures show that the harness and each system run, not how the"
                 " systems compare; run without --quick to measure.")


def markdown(meta: dict[str, Any], results: report.Results, systems: list[str],
             rows: list[report.Row], verdicts: list[summary.Verdict]) -> str:
    """The run as markdown: what ran, the goals of issue 17, every figure."""
    return "\n".join([
        f"# bench/compare {meta['started']} ({meta['revision']})", "",
        f"`{meta['command']}`: {meta['runs']} run(s), medians; layouts"
        f" {', '.join(meta['layouts'])}; {meta['cores']} cores.", "",
        *([QUICK_WARNING, ""] if meta["quick"] else []),
        "## Goals of issue 17 (ours / the best peer)", "",
        summary.markdown(summary.GOALS_HEAD, summary.goals_rows(verdicts)), "",
        "## Every figure", "", report.markdown_table(results, systems, rows), "",
        "```", report.NOTES, "```", ""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain SIGTERM would skip the finally blocks that stop every server and worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("redis-server") is None:
        print("redis-server is not on PATH: the benchmark starts private servers",
              file=sys.stderr)
        return 2
    cfg = Config.quick() if args.quick else Config()
    cfg = dataclasses.replace(cfg, submit_mode=args.submit)
    # One CPU task size for every system, measured once on an idle harness.
    cfg = dataclasses.replace(cfg, uneven_turns=workloads.calibrate(cfg.uneven_task_s))
    logdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    meta: dict[str, Any] = {"started": stamp, "quick": args.quick, "config": cfg.__dict__,
                            "cores": len(os.sched_getaffinity(0)), "python": sys.version,
                            "platform": platform.platform(), "logs": str(logdir),
                            "revision": revision(),
                            "command": " ".join(["python -m bench.compare.run",
                                                 *(argv if argv is not None else sys.argv[1:])])}
    meta["layouts"] = [lay.label for lay in args.layouts]
    meta["runs"] = args.runs
    log(f"benchmark: systems={','.join(args.systems)} quick={args.quick}"
        f" layouts={','.join(meta['layouts'])} runs={args.runs} logs={logdir}")
    steps = plan(args.layouts, cfg.load_fractions)
    record_server = PrivateRedis(logdir).start()
    runs: list[report.Results] = []
    try:
        rec = Records(record_server.url)
        systems: dict[str, System | str] = {}
        for name in args.systems:
            try:
                systems[name] = load(name, logdir, record_server.url)
            except ImportError as exc:
                log(f"{name}: not installed ({exc}); pip install -e '.[bench]'")
                systems[name] = f"not installed: {exc}"
        for r in range(args.runs):
            results: report.Results = {}
            for name, system in systems.items():
                if isinstance(system, str):
                    results[name] = {step.key: {"error": system} for step in steps}
                    continue
                started = time.monotonic()
                log(f"run {r + 1}/{args.runs}: {name}")
                results[name] = run_system(system, logdir, rec, cfg, steps,
                                           args.workloads or None)
                log(f"{name}: done in {time.monotonic() - started:.0f}s")
            runs.append(results)
        rec.close()
    finally:
        record_server.stop()
    meta["finished"] = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    medians = summary.median_results(runs)
    rows = report.rows(args.layouts, cfg.load_fractions)
    verdicts = summary.verdicts(medians, args.systems,
                                summary.goals(args.layouts, cfg.load_fractions))
    out_json, out_md = args.out / f"{stamp}.json", args.out / f"{stamp}.md"
    report.save_json(out_json, meta, medians, runs=runs,
                     goals=[v.as_dict() for v in verdicts])
    out_md.write_text(markdown(meta, medians, args.systems, rows, verdicts))
    print(report.table(medians, args.systems, rows))
    print(report.NOTES)
    print()
    print(summary.goals_table(verdicts))
    if args.quick:
        print(QUICK_WARNING)
    for line in report.errors(medians):
        print("error:", line)
    png = args.out / f"{stamp}.png"
    drawn = report.plot(png, medians, args.systems, rows)
    print(f"figures: {out_json}, {out_md}" + (f", chart: {png}" if drawn else
                                              " (no chart: nothing to draw, or matplotlib"
                                              " not installed)"))
    if args.keep_logs or any(report.errors(run) for run in runs):
        print(f"process logs: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
