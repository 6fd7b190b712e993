"""Where one single task's time goes, process by process (issue 17: profile before changing).

    python -m bench.compare.split [--tasks 2000] [--warm 300] [--runs 2]
                                  [--checkout LABEL=PYTHON ...] [--signing]
                                  [--idle SECONDS [--every 25]] [--out bench/results]

Runs our system as ``bench.compare`` does (2 x 1 process-pool workers, ``balancer serve``,
a private Redis, and a record Redis the tasks report to) and submits ``--tasks`` single
no-op tasks one after another, each waited for. Per task, medians of:

- the client's time before its submit's last Redis call (the one-task flow's script), that
  call's round trip, and the client's time after it;
- from that reply to the task's start, and from the start to the harness seeing its record
  (Redis answers the client and wakes the pool child in the same turn: when the child
  gets a core first, its task starts before the client has read its reply, and the
  median goes below zero on a busy host);
- the CPU of every process (this client, the pool children, the supervisors, serve, the
  broker Redis, the record Redis), from psutil, over the measured tasks;
- each script call's time in Redis (SLOWLOG, which counts the server's time only), named
  by the script: ``submit_small``, ``ack``, and ``take`` where the lease check behind the
  blocking fetch is a script (older checkouts; now plain commands, not listed).

``--idle SECONDS`` pauses that long before every ``--every``-th task, as the turns of
``bench.compare.interleaved`` leave each copy idle between them, and splits the first
task after each pause (its own figures, ``--every`` times fewer) from the others. A
task after an idle spell costs far more than one in a stream (every process wakes from
sleep, its caches cold), and the interleaved latency is largely made of such tasks.

One system alone on the machine: its figures are not comparable with those of a run
minutes apart on a shared host (``bench.compare.interleaved`` is for that). ``--checkout
LABEL=PYTHON`` runs the same measurement with another commit's venv (its code installed
there, run from a copy of ``bench/`` alone), alternating with ours, ``--runs`` times each:
the table shows each figure's range over the runs. ``--signing`` adds our code with a
signing key (``ours signed``: its client signs every task, its workers check each one) to
the alternation, which shows what signing costs each process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from bench.compare.base import ROOT, Job
from bench.compare.interleaved import (
    agent_env,
    harness_alone,
    new_signing_key,
    parse_checkout,
    running,
)

# A script call is named by its first key's kind (stable across versions of the scripts).
SCRIPTS = {"flow": "submit_small", "inbox": "take", "leases": "ack"}
SIGNED = "ours signed"  # the label of our code signing every task (--signing)
SPLIT = ("client before its send", "Redis round trip of the submit", "client after the reply",
         "reply to task start", "task start to record seen", "submit to record seen")


def _hook_calls() -> list[tuple[float, float]]:
    """Record (sent, replied) wall times of every ``Direct.call`` of this process."""
    try:
        from balancer.common.connection import Direct
    except ImportError:  # an older layout: common/ installed at the top level
        from common.connection import Direct  # type: ignore[import-not-found,no-redef]
    calls: list[tuple[float, float]] = []
    real: Callable[..., Any] = Direct.call

    def call(self: Any, *args: Any) -> Any:
        sent = time.time()
        try:
            return real(self, *args)
        finally:
            calls.append((sent, time.time()))

    Direct.call = call  # type: ignore[method-assign]
    return calls


def _kind(proc: psutil.Process, record_port: str) -> str:
    line = " ".join(proc.cmdline())
    if "redis-server" in line:
        return "Redis (record)" if f":{record_port}" in line else "Redis (broker)"
    if "balancer.cli serve" in line:
        return "serve"
    if "balancer.worker.cli" in line and not _forked_from_worker(proc):
        return "supervisor"
    return "pool child"  # with the forkserver and resource tracker, forked as they are


def _forked_from_worker(proc: psutil.Process) -> bool:
    """Whether a parent of ``proc`` runs the worker's command: the pool's processes are
    forked from its supervisor (worker/zygote.py) and keep its command line."""
    try:
        return any("balancer.worker.cli" in " ".join(p.cmdline()) for p in proc.parents())
    except psutil.Error:
        return False


def _cpu(record_port: str) -> dict[int, tuple[str, float]]:
    out = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            times = proc.cpu_times()
            out[proc.pid] = (_kind(proc, record_port), times.user + times.system)
        except psutil.Error:
            continue
    return out


def _script_times(entries: list[dict[str, Any]]) -> dict[str, float]:
    by: dict[str, list[int]] = defaultdict(list)
    for entry in entries:
        command = entry["command"]
        raw = command if isinstance(command, bytes) else str(command).encode()
        parts = raw.split(b" ")
        if parts[0].upper() != b"EVALSHA" or len(parts) < 4:
            continue
        kind = [*parts[3].split(b":"), b""][1].decode(errors="replace")  # {ns}:KIND:...
        by[SCRIPTS.get(kind, f"a script on {kind}")].append(int(entry["duration"]))
    return {name: statistics.median(d) for name, d in sorted(by.items())}


def measure(tasks: int, warm: int, idle: float = 0.0, every: int = 25) -> dict[str, Any]:
    """Run our system, submit ``warm`` then ``tasks`` single tasks one after another (with
    ``idle``, a pause that long before every ``every``-th); the figures (µs per task,
    medians), and with ``idle`` those of the first task after each pause apart."""
    calls = _hook_calls()
    with running("ours") as (session, rec, record_url):
        assert session.broker is not None
        broker = session.broker
        key = rec.new_key("split")
        split: list[tuple[float, ...]] = []

        def one(i: int) -> None:
            del calls[:]
            a = time.time()
            session.system.submit([Job("noop", key, str(i))])
            b = time.time()
            start = rec.pop(key, 60.0).start
            c = time.time()
            sent, replied = calls[-1]
            split.append((sent - a, replied - sent, b - replied, start - replied,
                          c - start, c - a))

        for i in range(warm):
            one(i)
        del split[:]
        port = record_url.rsplit(":", 1)[1].split("/")[0]
        broker.config_set("slowlog-max-len", tasks * 40)
        broker.config_set("slowlog-log-slower-than", 0)
        broker.slowlog_reset()
        before, client0 = _cpu(port), time.process_time()
        for i in range(warm, warm + tasks):
            if idle and (i - warm) % every == 0:
                time.sleep(idle)
            one(i)
        client = time.process_time() - client0
        after = _cpu(port)
        broker.config_set("slowlog-log-slower-than", 10000)
        scripts = _script_times(broker.slowlog_get(tasks * 40))
    cpu: dict[str, float] = defaultdict(float)
    cpu["client"] = client
    for pid, (kind, seconds) in after.items():
        if pid in before:
            cpu[kind] += seconds - before[pid][1]
    after_idle = split[::every] if idle else []
    streamed = [s for n, s in enumerate(split) if n % every] if idle else split
    return {"tasks": tasks, "split": _medians(streamed),
            **({"after idle": _medians(after_idle)} if after_idle else {}),
            "cpu": {name: seconds / tasks * 1e6 for name, seconds in sorted(cpu.items())},
            "scripts": scripts}


def _medians(split: list[tuple[float, ...]]) -> dict[str, float]:
    """Each figure of SPLIT over ``split``'s tasks: its median, in µs."""
    return {name: statistics.median(s[i] for s in split) * 1e6
            for i, name in enumerate(SPLIT)}


def run_agent(python: str, root: Path, tasks: int, warm: int,
              signing_keys: str = "", idle: float = 0.0, every: int = 25) -> dict[str, Any]:
    """``measure`` in a process of ``python``'s, from ``root`` (its ``bench`` folder); with
    ``signing_keys``, its client signs every task and its workers check it."""
    proc = subprocess.run([python, "-m", "bench.compare.split", "--agent", "--tasks",
                           str(tasks), "--warm", str(warm), "--idle", str(idle),
                           "--every", str(every)], cwd=root,
                          env=agent_env(root, signing_keys),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the measurement with {python} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _span(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.0f}" if round(low) == round(high) else f"{low:.0f}-{high:.0f}"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """One row per figure, one column per label: its range over the runs."""
    labels = list(results)
    rows: list[tuple[str, list[str]]] = []
    for section, title in (("split", "{}"), ("after idle", "after idle: {}"),
                           ("cpu", "CPU: {}"), ("scripts", "in Redis, per call: {}")):
        names = dict.fromkeys(n for runs in results.values() for r in runs
                              for n in r.get(section, {}))
        for name in names:
            cells = [_span([r[section][name] for r in results[label]
                            if name in r.get(section, {})])
                     if any(name in r.get(section, {}) for r in results[label]) else "-"
                     for label in labels]
            rows.append((title.format(name), cells))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'µs per task (medians)':<{width}}  " + "  ".join(f"{x:>11}" for x in labels)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{c:>11}" for c in cells)
              for name, cells in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="single tasks measured")
    parser.add_argument("--warm", type=int, default=300, help="single tasks run first")
    parser.add_argument("--runs", type=int, default=2, help="runs of each, alternated")
    parser.add_argument("--checkout", action="append", default=[], metavar="LABEL=PYTHON",
                        help="also measure the code installed in PYTHON's venv")
    parser.add_argument("--signing", action="store_true",
                        help=f"also our code signing every task ({SIGNED!r}), alternated"
                             " with the rest: what signing costs each process")
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="pause this long before every --every-th task, and show the"
                             " first task after each pause apart")
    parser.add_argument("--every", type=int, default=25, metavar="N",
                        help="tasks from one pause to the next (with --idle)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.runs < 1 or args.warm < 0:
        parser.error("--tasks and --runs must be at least 1, --warm at least 0")
    if args.idle < 0 or args.every < 2 or (args.idle and args.tasks < args.every):
        parser.error("--idle must not be negative, --every at least 2, and --tasks at least"
                     " --every")
    checkouts: dict[str, str] = {}
    for given in args.checkout:
        try:
            label, python = parse_checkout(given, {"ours", SIGNED, *checkouts})
        except ValueError as exc:
            parser.error(str(exc))
        checkouts[label] = python
    args.checkout = checkouts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.agent:
        print(json.dumps(measure(args.tasks, args.warm, args.idle, args.every)), flush=True)
        return 0
    labels = {"ours": (sys.executable, ROOT, "")}
    if args.signing:
        labels[SIGNED] = (sys.executable, ROOT, new_signing_key())
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        if args.checkout:
            alone = harness_alone(Path(tmp))
            labels.update({label: (python, alone, "")
                           for label, python in args.checkout.items()})
        results: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
        for r in range(args.runs):
            for label, (python, root, keys) in (list(labels.items()) if r % 2 == 0
                                                else list(labels.items())[::-1]):
                print(f"[{time.strftime('%H:%M:%S')}] run {r + 1}: {label}", flush=True)
                results[label].append(run_agent(python, root, args.tasks, args.warm, keys,
                                                args.idle, args.every))
    print(table(results))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"split-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"tasks": args.tasks, "warm": args.warm, "idle": args.idle,
                                "every": args.every, "results": results}, indent=1))
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
