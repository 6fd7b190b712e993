"""Run the side-by-side benchmark and print one table (issue 4).

    python -m bench.compare.run [--quick] [--systems ours,celery,...] [--out bench/results]

Every system gets a private redis-server per worker layout (stopped after), the same
worker layout and the same completion watch on a separate record Redis. A system whose
library is not installed is reported and skipped (``pip install -e '.[bench]'``).
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from bench.compare import report, workloads
from bench.compare.base import ROOT, Layout, PrivateRedis, System
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
PLAN: list[tuple[str, Layout, Workload]] = [
    ("throughput", A, workloads.throughput),
    ("latency", A, workloads.latency),
    ("prefetch_trap", A, workloads.prefetch_trap),
    ("makespan", B, workloads.makespan),
    ("uneven", Layout(2, 1, pin=True), workloads.uneven),
    ("priority", Layout(2, 1, priority=True), workloads.priority),
    ("priority_aging", Layout(2, 1, priority=True, aging=True), workloads.priority),
]

OURS_ONLY = ["layered", "idle", "dispatcher_scale"]
WORKLOADS = [name for name, _, _ in PLAN] + OURS_ONLY


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def applies(system: System, name: str, layout: Layout) -> bool:
    return (not layout.priority or system.has_priority) and (not layout.aging
                                                             or system.has_aging)


class Session:
    """A system running one layout on a private Redis; restarted when the layout changes
    or after a workload failed (its leftovers must not leak into the next one)."""

    def __init__(self, system: System, logdir: Path, rec: Records) -> None:
        self.system, self.logdir, self.rec = system, logdir, rec
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


def run_system(system: System, logdir: Path, rec: Records, cfg: Config,
               only: set[str] | None = None) -> dict[str, Figures]:
    out: dict[str, Figures] = {}
    session = Session(system, logdir, rec)
    try:
        for name, layout, fn in PLAN:
            if not applies(system, name, layout) or (only and name not in only):
                continue
            started = time.monotonic()
            try:
                broker = session.ensure(layout)
                out[name] = fn(system, rec, broker, cfg)
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
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    args.workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
    unknown = sorted(args.workloads - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain SIGTERM would skip the finally blocks that stop every server and worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("redis-server") is None:
        print("redis-server is not on PATH: the benchmark starts private servers",
              file=sys.stderr)
        return 2
    cfg = Config.quick() if args.quick else Config()
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
    log(f"benchmark: systems={','.join(args.systems)} quick={args.quick} logs={logdir}")
    record_server = PrivateRedis(logdir).start()
    results: report.Results = {}
    try:
        rec = Records(record_server.url)
        for name in args.systems:
            try:
                system = load(name, logdir, record_server.url)
            except ImportError as exc:
                log(f"{name}: not installed ({exc}); pip install -e '.[bench]'")
                results[name] = {w: {"error": f"not installed: {exc}"} for w, _, _ in PLAN}
                continue
            started = time.monotonic()
            results[name] = run_system(system, logdir, rec, cfg, args.workloads or None)
            log(f"{name}: done in {time.monotonic() - started:.0f}s")
        rec.close()
    finally:
        record_server.stop()
    meta["finished"] = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_json = args.out / f"{stamp}.json"
    report.save_json(out_json, meta, results)
    print(report.table(results, args.systems))
    print(report.NOTES)
    for line in report.errors(results):
        print("error:", line)
    png = args.out / f"{stamp}.png"
    drawn = report.plot(png, results, args.systems)
    print(f"figures: {out_json}" + (f", chart: {png}" if drawn else
                                    " (no chart: nothing to draw, or matplotlib not installed)"))
    if args.keep_logs or report.errors(results):
        print(f"process logs: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
