"""Latency of single tasks with every system running at once, submitted in turns.

    python -m bench.compare.interleaved [--systems ours,huey] [--copies 2] [--rounds 40]
                                        [--per 25] [--warm 50] [--out bench/results]

``bench.compare.run`` measures one system after another. On a shared host the machine's
speed drifts between those minutes (steal time): the same code measured twice, a few
minutes apart, moved its p50 by a third here, so a ratio of two systems measured apart
says little. Here every system runs its workers (2 x 1, each copy on a private Redis, as
in ``run``) for the whole measurement; the harness submits ``--per`` single tasks to one
copy, then to the next, for ``--rounds`` turns (every other round in reverse order), so a
drift falls on every system alike. Latency is taken as ``run`` takes it: from the start
of the submit call to the task's record on the record Redis.

Each system runs in ``--copies`` separate copies (default 2), pooled: two copies of the
same code differed by up to 14% here for their whole run (which core each process
happened to share with which), a luck that one copy per system would pass off as a
difference between systems. The figures: p50, p90 and p99 of each system's pooled
latencies, the ratio of ours to the best peer, and the median over rounds of ours / the
peer's p50 within the same round (the least drift-prone figure).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.compare import run as runner
from bench.compare.base import ROOT, Job, Layout, PrivateRedis, System
from bench.compare.records import Records
from bench.compare.workloads import Config, percentile

LAYOUT = Layout(2, 1)


@dataclass
class Copy:
    """One running copy of a system, with the latencies measured on it, per round."""

    system: str
    index: int
    session: runner.Session
    key: str
    rounds: list[list[float]] = field(default_factory=list)
    sent: int = 0

    def burst(self, rec: Records, n: int) -> list[float]:
        """``n`` single tasks one after another; their latencies in ms."""
        out = []
        for _ in range(n):
            p0 = time.perf_counter()
            self.session.system.submit([Job("noop", self.key, str(self.sent))])
            rec.pop(self.key, 30.0)
            out.append((time.perf_counter() - p0) * 1000)
            self.sent += 1
        return out


def figures(latencies: list[float]) -> dict[str, float]:
    return {"tasks": len(latencies), "p50_ms": percentile(latencies, 50),
            "p90_ms": percentile(latencies, 90), "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies)}


def round_ratios(copies: list[Copy], ours: str, peer: str) -> list[float]:
    """Per round: the p50 of ours' tasks over the p50 of the peer's, in that round."""
    def per_round(name: str) -> list[list[float]]:
        mine = [c for c in copies if c.system == name]
        return [[x for c in mine for x in c.rounds[r]] for r in range(len(mine[0].rounds))]

    return [statistics.median(a) / statistics.median(b)
            for a, b in zip(per_round(ours), per_round(peer))]


def measure(copies: list[Copy], rec: Records, rounds: int, per: int, warm: int) -> None:
    for c in copies:
        c.burst(rec, warm)
    for r in range(rounds):
        for c in copies if r % 2 == 0 else copies[::-1]:
            c.rounds.append(c.burst(rec, per))


def summarize(copies: list[Copy], systems: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in systems:
        pooled = [x for c in copies if c.system == name for r in c.rounds for x in r]
        results[name] = figures(pooled)
        results[name]["copies_p50_ms"] = [
            percentile([x for r in c.rounds for x in r], 50) for c in copies
            if c.system == name]
    peers = [s for s in systems if s != "ours"]
    if "ours" in systems and peers:
        best = min(peers, key=lambda s: results[s]["p50_ms"])
        ratios = round_ratios(copies, "ours", best)
        results["ours/best"] = {
            "best": best,
            "p50": results["ours"]["p50_ms"] / results[best]["p50_ms"],
            "p99": results["ours"]["p99_ms"] / results[best]["p99_ms"],
            "round_p50_median": statistics.median(ratios),
            "round_p50_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1
            else ratios * 3,
        }
    return results


def table(results: dict[str, Any], systems: list[str]) -> str:
    lines = [f"{'system':<10} {'tasks':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
             "  p50 of each copy"]
    for name in systems:
        f = results[name]
        lines.append(f"{name:<10} {f['tasks']:>6} {f['p50_ms']:>8.3f} {f['p90_ms']:>8.3f}"
                     f" {f['p99_ms']:>8.3f}  "
                     + ", ".join(f"{x:.3f}" for x in f["copies_p50_ms"]))
    ratio = results.get("ours/best")
    if ratio:
        q = ratio["round_p50_quartiles"]
        lines.append(f"ours / {ratio['best']} (the best peer): p50 {ratio['p50']:.2f},"
                     f" p99 {ratio['p99']:.2f}; per round, p50 {ratio['round_p50_median']:.2f}"
                     f" (quartiles {q[0]:.2f}-{q[2]:.2f})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--systems", default="ours,huey",
                        help=f"comma-separated, of: {', '.join(runner.SYSTEMS)}"
                             " (default ours,huey)")
    parser.add_argument("--copies", type=int, default=2,
                        help="running copies of each system, pooled (default 2)")
    parser.add_argument("--rounds", type=int, default=40,
                        help="turns of every copy (default 40)")
    parser.add_argument("--per", type=int, default=25,
                        help="single tasks per copy per turn (default 25)")
    parser.add_argument("--warm", type=int, default=50,
                        help="tasks per copy before measuring (default 50)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="folder for interleaved-<timestamp>.json")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in runner.SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(runner.SYSTEMS)}")
    for name in ("copies", "rounds", "per"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1 (got {getattr(args, name)})")
    if args.warm < 0:
        parser.error(f"--warm must not be negative (got {args.warm})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain SIGTERM would skip the finally blocks that stop every server and worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logdir = Path(tempfile.mkdtemp(prefix="bench-interleaved-"))
    started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    record_server = PrivateRedis(logdir).start()
    rec = Records(record_server.url)
    copies: list[Copy] = []
    try:
        for i in range(args.copies):
            for name in args.systems:
                system: System = runner.load(name, logdir, record_server.url)
                session = runner.Session(system, logdir, rec, Config())
                copies.append(Copy(name, i, session, rec.new_key(f"{name}-{i}")))
                session.ensure(LAYOUT)
                runner.log(f"{name} copy {i}: workers ready")
        measure(copies, rec, args.rounds, args.per, args.warm)
    finally:
        for c in copies:
            c.session.close()
        rec.close()
        record_server.stop()
    results = summarize(copies, args.systems)
    print(table(results, args.systems))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"interleaved-{started}.json"
    meta = {"started": started, "revision": runner.revision(), "layout": "2x1",
            "command": " ".join(["python -m bench.compare.interleaved",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "copies": args.copies, "rounds": args.rounds, "per": args.per, "warm": args.warm}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
