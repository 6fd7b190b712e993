"""Latency of single tasks with every system running at once, submitted in turns.

    python -m bench.compare.interleaved [--systems ours,huey] [--copies 2] [--rounds 40]
                                        [--per 25] [--warm 50] [--out bench/results]
                                        [--checkout LABEL=PYTHON ...] [--measure submit]
                                        [--signing]

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
difference between systems.

``--checkout LABEL=PYTHON`` adds our system as another checkout runs it: PYTHON is the
interpreter of a venv where that checkout is installed (``pip install -e <checkout>``);
its client, serve and workers run that code, under this harness. That is how a change is
measured against an older commit: both running at once, in turns.

Each copy runs in a process of its own (an agent: its interpreter, its client, its
private Redis servers, its workers); this process only gives the turns and gathers the
latencies. A checkout's agents run from a copy of ``bench/`` alone, so that they import
``balancer`` from their venv.

The figures: p50, p90 and p99 of each system's pooled latencies, the ratio of ours to
the best peer, the median over rounds of ours / the peer's p50 within the same round (the
least drift-prone figure), and the same for each checkout against ours.

``--measure submit`` times the submit calls instead (issue 17's submit rate, one call per
single task, as ``run``'s submit workload): in its turn a copy makes ``--per`` calls back
to back, each timed alone, then waits, untimed, until their tasks have run, so that the
next turn finds idle workers. The figures are then those of a call's time, and the table
adds calls per second (1000 / the mean call in ms): a ratio below 1 is a faster submit.

``--signing`` gives every copy one signing key (``BALANCER_SIGNING_KEYS``): our clients
sign each task and our workers check it (the peers ignore it; a checkout older than
signing refuses the setting and does not start: measure it without). Without it, no copy
signs, whatever this process's environment says: the agents get none of its BALANCER_
settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bench.compare.base import ROOT, Job, Layout, PrivateRedis
from bench.compare.records import Records
from bench.compare.workloads import Config, percentile

if TYPE_CHECKING:
    from bench.compare.run import Session

LAYOUT = Layout(2, 1)
READY = "ready"
START_TIMEOUT = 180.0


@dataclass
class Copy:
    """One running copy of a system (its agent), with the latencies measured on it."""

    system: str  # the label: a system's name, or a checkout's
    index: int
    agent: subprocess.Popen[str] | None = None
    rounds: list[list[float]] = field(default_factory=list)

    def burst(self, n: int, what: str = "latency") -> list[float]:
        """``n`` single tasks by the agent: one after another, their latencies in ms; or
        (``what`` "submit") submitted back to back, the time of each call in ms."""
        assert self.agent is not None and self.agent.stdin is not None
        self.agent.stdin.write(f"{what} {n}\n")
        self.agent.stdin.flush()
        return [float(x) for x in json.loads(_line(self.agent, 120.0))]


def _line(agent: subprocess.Popen[str], timeout: float) -> str:
    """The agent's next line (it writes whole lines); an agent that exits or says nothing
    for ``timeout`` seconds is an error."""
    assert agent.stdout is not None
    ready, _, _ = select.select([agent.stdout], [], [], timeout)
    line = agent.stdout.readline() if ready else ""
    if not line:
        status = agent.poll()
        why = (f"exited with status {status}" if status is not None
               else f"gave no answer within {timeout:.0f} s")
        raise RuntimeError(f"agent pid {agent.pid} {why}; see its log")
    return line


@contextlib.contextmanager
def running(system_name: str) -> Iterator[tuple[Session, Records, str]]:
    """One copy of ``system_name`` on LAYOUT, on private Redis servers of its own: (its
    session, the records its tasks report to, the record server's URL). Everything it
    started is stopped on the way out."""
    from bench.compare import run as runner

    logdir = Path(tempfile.mkdtemp(prefix=f"bench-{system_name}-"))
    record_server = PrivateRedis(logdir).start()
    rec = Records(record_server.url)
    session = runner.Session(runner.load(system_name, logdir, record_server.url), logdir,
                             rec, Config())
    try:
        session.ensure(LAYOUT)
        yield session, rec, record_server.url
    finally:
        session.close()
        rec.close()
        record_server.stop()


def new_signing_key() -> str:
    """A signing key for one measurement (``--signing``), long enough for the settings."""
    return f"bench-{secrets.token_hex(16)}"


def agent_env(root: Path, signing_keys: str = "") -> dict[str, str]:
    """The environment of a process run from ``root`` (its ``bench`` is the harness):
    none of this process's BALANCER_ or BENCH_ settings, which are the harness's to give,
    but ``signing_keys`` when given (our system passes them on to its serve and workers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "BENCH_"))}
    env["PYTHONPATH"] = str(root)
    if signing_keys:
        env["BALANCER_SIGNING_KEYS"] = signing_keys
    return env


def agent(system_name: str) -> int:
    """Run one copy: start its servers and workers, say ``ready``, then answer each line
    ``latency N`` with the latencies of N single tasks and ``submit N`` with the times of N
    submit calls (a JSON list of ms), until stdin closes."""
    with running(system_name) as (session, rec, _):
        key, sent = rec.new_key("interleaved"), 0
        print(READY, flush=True)
        for line in sys.stdin:
            what, n = line.split()
            out = []
            for _ in range(int(n)):
                p0 = time.perf_counter()
                session.system.submit([Job("noop", key, str(sent))])
                if what == "latency":
                    rec.pop(key, 30.0)
                out.append(round((time.perf_counter() - p0) * 1000, 4))
                sent += 1
            if what == "submit":
                rec.wait(key, int(n), 60.0)
                rec.drop(key)
            print(json.dumps(out), flush=True)
    return 0


def start_agent(system: str, python: str, log: IO[str], root: Path = ROOT,
                signing_keys: str = "") -> subprocess.Popen[str]:
    """An agent run by ``python`` from ``root`` (its folder ``bench`` is the harness)."""
    proc = subprocess.Popen([python, "-m", "bench.compare.interleaved", "--agent", system],
                            cwd=root, env=agent_env(root, signing_keys), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
    try:
        if _line(proc, START_TIMEOUT).strip() != READY:
            raise RuntimeError(f"agent for {system} ({python}) did not start; see its log")
    except BaseException:  # not kept by the caller: stop it (and its workers) here
        stop_agent(proc)
        raise
    return proc


def harness_alone(into: Path) -> Path:
    """A copy of this harness (``bench/``) without the product beside it: a checkout's
    agent and its workers run from there, so that ``balancer`` is imported from that
    checkout's venv, not from this tree (which a path entry at its root would put first)."""
    shutil.copytree(ROOT / "bench", into / "bench",
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    return into


def stop_agent(proc: subprocess.Popen[str]) -> None:
    """Close its stdin (it stops its workers and servers), then make sure it is gone."""
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # a session we created: only ours
        proc.wait(10)


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


def _ratio(copies: list[Copy], results: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    ratios = round_ratios(copies, a, b)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"of": a, "to": b, "p50": results[a]["p50_ms"] / results[b]["p50_ms"],
            "p99": results[a]["p99_ms"] / results[b]["p99_ms"],
            "round_p50_median": statistics.median(ratios),
            "round_p50_quartiles": quartiles}


def measure(copies: list[Copy], rounds: int, per: int, warm: int,
            what: str = "latency") -> None:
    if warm:
        for c in copies:
            c.burst(warm, what)
    for r in range(rounds):
        for c in copies if r % 2 == 0 else copies[::-1]:
            c.rounds.append(c.burst(per, what))


def summarize(copies: list[Copy], systems: list[str],
              checkouts: Sequence[str] = ()) -> dict[str, Any]:
    """Figures per system and checkout label, ours / the best peer, each checkout / ours."""
    results: dict[str, Any] = {}
    for name in [*systems, *checkouts]:
        pooled = [x for c in copies if c.system == name for r in c.rounds for x in r]
        results[name] = figures(pooled)
        results[name]["copies_p50_ms"] = [
            percentile([x for r in c.rounds for x in r], 50) for c in copies
            if c.system == name]
    peers = [s for s in systems if s != "ours"]
    if "ours" in systems and peers:
        best = min(peers, key=lambda s: results[s]["p50_ms"])
        results["ours/best"] = {"best": best, **_ratio(copies, results, "ours", best)}
    if "ours" in systems:
        for label in checkouts:
            results[f"{label}/ours"] = _ratio(copies, results, label, "ours")
    return results


def table(results: dict[str, Any], names: list[str], what: str = "latency") -> str:
    rate = what == "submit"  # a call's time: add the calls per second
    lines = [f"{'system':<10} {'tasks':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
             + (f" {'calls/s':>8}" if rate else "") + "  p50 of each copy"]
    for name in names:
        f = results[name]
        lines.append(f"{name:<10} {f['tasks']:>6} {f['p50_ms']:>8.3f} {f['p90_ms']:>8.3f}"
                     f" {f['p99_ms']:>8.3f}"
                     + (f" {1000 / f['mean_ms']:>8.0f}" if rate else "") + "  "
                     + ", ".join(f"{x:.3f}" for x in f["copies_p50_ms"]))
    for key, ratio in results.items():
        if "/" not in key:
            continue
        q = ratio["round_p50_quartiles"]
        what = f"{ratio['to']} (the best peer)" if key == "ours/best" else ratio["to"]
        lines.append(f"{ratio['of']} / {what}: p50 {ratio['p50']:.2f}, p99 {ratio['p99']:.2f};"
                     f" per round, p50 {ratio['round_p50_median']:.2f}"
                     f" (quartiles {q[0]:.2f}-{q[2]:.2f})")
    return "\n".join(lines)


def parse_checkout(given: str, taken: Collection[str]) -> tuple[str, str]:
    """``LABEL=PYTHON`` as (label, python); ValueError naming what is wrong: no ``=``, a
    label already ``taken`` or holding a '/', an interpreter that cannot be run."""
    label, sep, python = given.partition("=")
    if not sep or not label or not python:
        raise ValueError(f"--checkout {given!r}: expected LABEL=PYTHON")
    if label in taken or "/" in label:
        raise ValueError(f"--checkout {given!r}: the label must be new and hold no '/'")
    if not os.access(python, os.X_OK):
        raise ValueError(f"--checkout {given!r}: {python} is not an executable")
    return label, python


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from bench.compare.run import SYSTEMS

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--systems", default="ours,huey",
                        help=f"comma-separated, of: {', '.join(SYSTEMS)} (default ours,huey)")
    parser.add_argument("--checkout", action="append", default=[], metavar="LABEL=PYTHON",
                        help="also our system as run by PYTHON (a venv with another checkout"
                             " installed), under LABEL; repeatable")
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
    parser.add_argument("--measure", choices=("latency", "submit"), default="latency",
                        help="latency (default): submit to the task's record, one task"
                             " at a time; submit: the time of each submit call, made"
                             " back to back")
    parser.add_argument("--signing", action="store_true",
                        help="our clients sign every task and our workers check it (one"
                             " key for every copy)")
    parser.add_argument("--agent", help=argparse.SUPPRESS)  # one copy, run by the harness
    args = parser.parse_args(argv)
    if args.agent:
        return args
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    checkouts: dict[str, str] = {}
    for given in args.checkout:
        try:
            label, python = parse_checkout(given, {*SYSTEMS, *checkouts})
        except ValueError as exc:
            parser.error(str(exc))
        checkouts[label] = python
    args.checkout = checkouts
    for name in ("copies", "rounds", "per"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1 (got {getattr(args, name)})")
    if args.warm < 0:
        parser.error(f"--warm must not be negative (got {args.warm})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.agent:
        return agent(args.agent)
    # A plain SIGTERM would skip the finally blocks that stop every agent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from bench.compare.run import log, revision

    logdir = Path(tempfile.mkdtemp(prefix="bench-interleaved-"))
    started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    runs = [(name, name, sys.executable, ROOT) for name in args.systems]
    if args.checkout:
        alone = harness_alone(logdir / "harness")
        runs += [(label, "ours", python, alone) for label, python in args.checkout.items()]
    signing_keys = new_signing_key() if args.signing else ""
    copies: list[Copy] = []
    try:
        for i in range(args.copies):
            for label, system, python, root in runs:
                copy = Copy(label, i)
                copies.append(copy)
                with (logdir / f"{label}-{i}.log").open("w") as agent_log:
                    copy.agent = start_agent(system, python, agent_log, root, signing_keys)
                log(f"{label} copy {i}: workers ready")
        measure(copies, args.rounds, args.per, args.warm, args.measure)
    except Exception:
        log(f"failed; the agents' logs are in {logdir}")
        raise
    finally:
        for c in copies:
            if c.agent is not None:
                stop_agent(c.agent)
    labels = list(args.checkout)
    results = summarize(copies, args.systems, labels)
    print(table(results, [*args.systems, *labels], args.measure))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"interleaved-{started}.json"
    meta = {"started": started, "revision": revision(), "layout": "2x1",
            "command": " ".join(["python -m bench.compare.interleaved",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "measure": args.measure, "signing": args.signing,
            "checkouts": args.checkout, "copies": args.copies, "rounds": args.rounds,
            "per": args.per, "warm": args.warm}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
