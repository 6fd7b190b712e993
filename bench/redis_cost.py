"""Where one task's Redis commands and Redis CPU go: `balancer serve` and 2 workers (1
process-pool slot each, as bench/compare's 2x1) on a private redis-server, then N
single-task flows submitted one call each, back to back, then waited for.

Per round of N flows (the idle cluster's own traffic, heartbeats, measured for 2 s before
and subtracted) it prints:

- Redis CPU per task (INFO ``used_cpu_sys + used_cpu_user``) and commands per task (INFO
  commandstats, the commands scripts call included; the client's own waits, one BLMOVE
  per flow, left out);
- per command: calls and server microseconds per task (commandstats; an EVALSHA's
  microseconds include the commands its script called, which are listed too).

Then one more round logs every command (SLOWLOG, ``slowlog-log-slower-than 0``; an
EVALSHA's SHA1 names its script) and prints per script and per command: calls per task,
microseconds per call and per task. Logging costs the server time of its own: that
round's CPU reads high, and a script's time includes logging the commands it calls.

It prints figures and never asserts speed. Run from anywhere:

    python bench/redis_cost.py [--flows N] [--rounds R] [--serial] [--no-offers] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.tasks, so must we

import redis  # noqa: E402
from balancer.common import luasource  # noqa: E402

from bench import cluster_bench as cb  # noqa: E402
from bench.compare.base import PrivateRedis  # noqa: E402

SLOWLOG_LEN = 1_000_000
SCRIPTS = sorted(p.stem for p in (ROOT / "common" / "lua").glob("*.lua")
                 if not p.stem.startswith("_"))


def script_names() -> dict[str, str]:
    """SHA1 -> script name, as EVALSHA names the scripts."""
    return {hashlib.sha1(luasource.source(s).encode()).hexdigest(): s for s in SCRIPTS}


def commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Per command: (calls, microseconds)."""
    return {k[len("cmdstat_"):]: (int(v["calls"]), int(v["usec"]))
            for k, v in client.info("commandstats").items() if k.startswith("cmdstat_")}


def cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def diff(after: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]
         ) -> dict[str, tuple[int, int]]:
    out = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls - c0:
            out[name] = (calls - c0, usec - u0)
    return out


def slowlog(client: redis.Redis, names: dict[str, str]) -> dict[str, list[int]]:
    """Per command (an EVALSHA: per script) the microseconds of every call logged."""
    out: dict[str, list[int]] = defaultdict(list)
    for entry in client.execute_command("SLOWLOG", "GET", SLOWLOG_LEN):
        _id, _at, micros, argv = entry[:4]
        command = argv[0].decode().lower()
        if command == "evalsha" and len(argv) > 1:
            command = "script " + names.get(argv[1].decode(), argv[1].decode()[:8])
        out[command].append(int(micros))
    return out


def one_round(client: redis.Redis, flows: int, timeout: float, log: bool,
              serial: bool = False) -> dict[str, Any]:
    """N flows; with ``log`` every command goes to the SLOWLOG (which costs the server
    CPU of its own: the CPU figure of such a round reads high)."""
    names = script_names()
    # The idle cluster's own traffic (heartbeats) over a few seconds, subtracted below.
    c0, s0, t0 = cpu(client), commandstats(client), time.perf_counter()
    time.sleep(2.0)
    idle_s = time.perf_counter() - t0
    idle_cpu_per_s = (cpu(client) - c0) / idle_s
    idle_cmds_per_s = sum(c for c, _ in diff(commandstats(client), s0).values()) / idle_s
    client.execute_command("SLOWLOG", "RESET")
    if log:
        client.config_set("slowlog-log-slower-than", 0)
    c0, s0, t0 = cpu(client), commandstats(client), time.perf_counter()
    if serial:  # each flow submitted once the one before finished: idle workers
        for _ in range(flows):
            run = cb.many_noops("redis-cost", 1).submit(client=client)
            cb.check(run.wait(timeout), f"flow {run.id}")
        submitted = time.perf_counter()
    else:
        runs = [cb.many_noops("redis-cost", 1).submit(client=client) for _ in range(flows)]
        submitted = time.perf_counter()
        for run in runs:
            cb.check(run.wait(timeout), f"flow {run.id}")
    wall = time.perf_counter() - t0
    # Read the counters before anything else runs (our own INFO calls are in the figures:
    # a handful over thousands of tasks).
    used = cpu(client) - c0
    stats = diff(commandstats(client), s0)
    client.config_set("slowlog-log-slower-than", -1)
    logged = slowlog(client, names) if log else {}
    # run.wait's BLMOVE per flow is this client waiting, not the system's cost: left out.
    calls, usec = stats.get("blmove", (0, 0))
    if calls >= flows:
        stats["blmove"] = (calls - flows, usec * (calls - flows) // calls)  # about
    total_cmds = sum(c for c, _ in stats.values()) - idle_cmds_per_s * wall
    return {
        "flows": flows, "wall_s": wall, "calls_per_s": flows / (submitted - t0),
        "redis_cpu_ms_per_task": (used - idle_cpu_per_s * wall) * 1000 / flows,
        "redis_cpu_ms_per_task_raw": used * 1000 / flows,
        "cmds_per_task": total_cmds / flows,
        "idle_cmds_per_s": idle_cmds_per_s,
        "commands": {k: {"per_task": c / flows, "usec_per_task": u / flows}
                     for k, (c, u) in sorted(stats.items(), key=lambda kv: -kv[1][1])},
        "slowlog": {k: {"per_task": len(v) / flows, "usec_mean": statistics.mean(v),
                        "usec_median": statistics.median(v), "usec_per_task": sum(v) / flows}
                    for k, v in sorted(logged.items(), key=lambda kv: -sum(kv[1]))},
    }


def report(r: dict[str, Any]) -> str:
    lines = [f"{r['flows']} flows in {r['wall_s']:.2f} s ({r['calls_per_s']:.0f} submit calls/s):"
             f" Redis CPU {r['redis_cpu_ms_per_task']:.3f} ms/task"
             f" ({r['redis_cpu_ms_per_task_raw']:.3f} before idle),"
             f" {r['cmds_per_task']:.2f} commands/task (idle {r['idle_cmds_per_s']:.0f}/s)",
             f"  {'command':<24} {'per task':>9} {'us/task':>9}"]
    for name, c in r["commands"].items():
        lines.append(f"  {name:<24} {c['per_task']:>9.2f} {c['usec_per_task']:>9.2f}")
    if not r["slowlog"]:
        return "\n".join(lines)
    lines.append(f"  {'slowlog (top level)':<24} {'per task':>9} {'us mean':>9} {'us p50':>9}"
                 f" {'us/task':>9}")
    for name, c in r["slowlog"].items():
        lines.append(f"  {name:<24} {c['per_task']:>9.2f} {c['usec_mean']:>9.2f}"
                     f" {c['usec_median']:>9.1f} {c['usec_per_task']:>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serial", action="store_true",
                        help="submit each flow once the one before finished (idle workers:"
                             " every submit can take the standing offer)")
    parser.add_argument("--no-offers", action="store_true",
                        help="the client takes no standing offers: every flow goes through"
                             " the dispatcher")
    args = parser.parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="redis-cost-"))
    server = PrivateRedis(logdir, "--slowlog-max-len", str(SLOWLOG_LEN)).start()
    namespace = f"cost-{uuid.uuid4().hex[:8]}"
    os.environ["BALANCER_NAMESPACE"] = namespace
    client = redis.Redis.from_url(server.url, socket_timeout=cb.CLIENT_SOCKET_TIMEOUT)
    if args.no_offers:
        from balancer import submit as submit_module
        submit_module._offers_refused.add(client)
    cluster = cb.Cluster(server.url, namespace, logdir, "WARNING")
    print(f"redis cost: flows={args.flows} rounds={args.rounds} serial={args.serial}"
          f" offers={'off' if args.no_offers else 'on'}"
          f" load={os.getloadavg()[0]:.2f} logs={logdir}", flush=True)
    rounds = []
    try:
        cluster.serve()
        with cb.running_workers(cluster, "process", 1):
            for _ in range(50):  # warm: the offer read, the scripts loaded
                cb.check(cb.many_noops("warm", 1).submit(client=client).wait(args.timeout),
                         "warm-up")
            for r in range(args.rounds + 1):  # the last round logs every command
                rounds.append(one_round(client, args.flows, args.timeout, r == args.rounds,
                                        args.serial))
                print(report(rounds[-1]), flush=True)
    finally:
        cluster.stop_all()
        client.close()
        server.stop()
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
