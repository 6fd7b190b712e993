"""Many simulated workers in one process, for workload 7 (dispatcher scale) and for
``bench/partition_scale.py`` (10,000 workers over 16 partitions).

Each simulated worker has one slot, registers and heartbeats like a real one
(``Scripts.heartbeat`` with a ``WorkerInfo``), and acknowledges each lease it is given
(``Scripts.ack_and_take``, as a one-slot worker does for a task that ran under 50 ms)
without running anything.

One partition (workload 7): a few threads each block on the inboxes of a share of the
workers at once (BLPOP over many keys) and acknowledge what they pop; every worker beats in
full every interval (``--beats full``, the default, as this workload always has).

Several partitions (the namespace's stored count): every worker registers and beats in
every partition and has an inbox in each, as a real worker does (worker/doorbell.py). A
consumer thread blocks on the doorbells of a share of the workers at once (one BLMPOP over
their keys, in a rotating order so that none is served last for ever), and for each note
takes from that partition's inbox (take.lua) and acknowledges with ack_and_take, which takes
the next lease of the same partition in the same call, as a real slot does. Every SWEEP
seconds each worker looks in all its inboxes, as a real one does when no note came
(``--sweep take``: a take per partition, as worker/doorbell.py did before; ``--sweep
llen``: one pipelined LLEN per partition, as it does now). With ``--beats real`` the
beats follow the real worker's rule (worker/heartbeat.py): a light beat (one ZADD) per
partition per interval, in full every FULL_EVERY-th.

What is cheaper than the real thing, and why it is faithful for Redis's and the
dispatchers' work: the simulator sends each worker's commands (the same commands, as many)
but batches many workers' heartbeats and sweeps in one pipeline, and blocks on many
doorbells in one call, on a few connections, where 10,000 real workers would each use
their own. Redis executes the same commands; it reads them in fewer round trips (see
docs/scaling.md for what a round trip costs it). Latencies are measured from a task's
ready time (in its lease: Redis's clock, the same host's) to the moment a simulated
worker took it from its inbox.

    python -m bench.compare.simworkers --workers 1000 --queue bench-sim --seconds 20

SIGUSR1 starts the measured window (counts and latencies from then on); SIGTERM ends the
run; it then prints a JSON line of counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from balancer.common import codec, luasource, partitions, prefetch, signals
from balancer.common.connection import Direct, connect
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.replies import as_bytes_list, as_list
from balancer.common.scripts import Done, Scripts
from balancer.common.settings import Settings
from balancer.worker.doorbell import SWEEP
from balancer.worker.heartbeat import FULL_EVERY

BATCH = 250  # workers per pipelined round trip of heartbeats or sweeps
LATENCIES_MAX = 2_000_000


def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


class Sim:
    def __init__(self, settings: Settings, n: int, queue: str, until: float,
                 beats: str = "full", sweep: str = "llen", prefix: str = "") -> None:
        self.settings = settings
        self.client = connect(settings.server_url)
        # A connection per consumer thread and partition (each thread's scripts' own).
        self.client.connection_pool.max_connections = 1 << 20
        self.keys = Keys(settings.namespace)
        self.count = partitions.count(self.client, self.keys)
        self.parts = [Scripts(self.client, self.keys.of(p)) for p in range(self.count)]
        self.ids = [f"sim-{prefix or os.getpid()}-{i:05d}" for i in range(n)]
        self.queue = queue
        self.until = until
        self.beats = beats
        self.sweep_mode = sweep
        self.ttl_ms = int((settings.worker_timeout
                           + (FULL_EVERY + 1) * settings.heartbeat_interval) * 1000)
        self.result_ttl = int(settings.result_ttl * 1000)
        self.quiet_above = prefetch.ack_quiet_above(1)
        self.lock = threading.Lock()
        self.measuring = False
        self.completed = 0
        self.refused = 0
        self.heartbeats = 0
        self.sweeps = 0
        self.slowest_round_s = 0.0
        self.latencies: list[int] = []  # ms from ready to taken, in the window
        self.error = ""

    def info(self, wid: str) -> bytes:
        return WorkerInfo(id=wid, queues=(self.queue,), capacity=1, host="sim",
                          pid=os.getpid(), pool="thread").to_blob()

    def guarded(self, fn: Callable[..., None], *args: object) -> Callable[[], None]:
        """A thread body that keeps its first exception for the report instead of dying
        silently."""

        def body() -> None:
            try:
                fn(*args)
            except Exception as exc:
                self.error = self.error or f"{type(exc).__name__}: {exc}"
                raise

        return body

    def start_window(self) -> None:
        with self.lock:
            self.measuring = True
            self.completed = self.refused = self.heartbeats = self.sweeps = 0
            self.latencies = []

    # -- heartbeats ------------------------------------------------------------------

    def register_all(self) -> None:
        direct = Direct(self.client, route=self.keys.workers)
        for i in range(0, len(self.ids), BATCH):
            commands = [s.heartbeat_command(w, self.info(w), self.ttl_ms)
                        for w in self.ids[i:i + BATCH] for s in self.parts]
            self._send(direct, commands)

    def _send(self, direct: Direct, commands: list[tuple[Any, ...]]) -> list[Any]:
        replies = direct.calls(*commands)
        if any(isinstance(r, Exception) for r in replies):  # NOSCRIPT on a new server
            self.client.script_load(luasource.source("heartbeat"))
            replies = direct.calls(*commands)
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return replies

    def heartbeat_all(self, direct: Direct, round_no: int) -> None:
        started = time.monotonic()
        now_ms = int(time.time() * 1000)
        sent = 0
        for i in range(0, len(self.ids), BATCH):
            commands = []
            for j, w in enumerate(self.ids[i:i + BATCH]):
                full = self.beats == "full" or (i + j + round_no) % FULL_EVERY == 0
                for s in self.parts:
                    commands.append(s.heartbeat_command(w, self.info(w), self.ttl_ms) if full
                                    else s.keep_alive_command(w, now_ms))
            sent += len(commands)
            self._send(direct, commands)
        with self.lock:
            self.heartbeats += sent
        self.slowest_round_s = max(self.slowest_round_s, time.monotonic() - started)

    def beat(self) -> None:
        direct = Direct(self.client, route=self.keys.workers)
        round_no = 0
        while time.monotonic() < self.until:
            started = time.monotonic()
            round_no += 1
            self.heartbeat_all(direct, round_no)
            time.sleep(max(0.0, self.settings.heartbeat_interval
                           - (time.monotonic() - started)))

    # -- sweeps (several partitions) -------------------------------------------------

    def sweep(self) -> None:
        """Every SWEEP seconds, each worker looks in every partition's inbox, as a real
        worker does when no note came for that long. What it finds is left for the
        consumers (no note was lost here), so only the cost is simulated."""
        direct = Direct(self.client, route=self.keys.workers)
        while time.monotonic() < self.until:
            started = time.monotonic()
            for i in range(0, len(self.ids), BATCH):
                commands: list[tuple[Any, ...]] = []
                for w in self.ids[i:i + BATCH]:
                    for s in self.parts:
                        # A take of none: the script's call without moving what the
                        # consumers are to take (an idle worker's sweep finds nothing).
                        commands.append(s.take_command(w, 0, fetched=False)
                                        if self.sweep_mode == "take"
                                        else ("LLEN", s.keys.inbox(w)))
                direct.calls(*commands)
                with self.lock:
                    self.sweeps += len(commands)
            time.sleep(max(0.0, SWEEP - (time.monotonic() - started)))

    # -- taking and acknowledging ----------------------------------------------------

    def _took(self, now_ms: int, lease: signals.Lease) -> None:
        if self.measuring and lease.ready_ms and len(self.latencies) < LATENCIES_MAX:
            self.latencies.append(now_ms - lease.ready_ms)

    def _ack(self, scripts: Scripts, wid: str, lease: signals.Lease, result: bytes
             ) -> list[bytes]:
        """Acknowledge a lease and take the next of the same inbox, as a one-slot worker's
        slot does when alone; what it took."""
        now_ms = int(time.time() * 1000)
        done = Done(lease.task_id, lease.token, lease.queue, lease.flow, now_ms, result,
                    lease.timeout is not None, [], lease.name, lease.ready_ms)
        stored, taken = scripts.ack_and_take(wid, [done], self.result_ttl, now_ms, 1,
                                             self.quiet_above)
        with self.lock:
            if stored[0]:
                self.completed += 1
            else:
                self.refused += 1
        return taken

    def consume(self, ids: list[str]) -> None:
        """One partition: block on the inboxes of ``ids`` at once."""
        client = connect(self.settings.server_url)
        scripts = Scripts(client, self.keys)
        owner = {self.keys.inbox(w).encode(): w for w in ids}
        inboxes = [self.keys.inbox(w) for w in ids]
        result = codec.pack(None)
        while time.monotonic() < self.until:
            item = client.blpop(inboxes, timeout=1)
            if item is None:
                continue
            wid = owner[item[0]]
            self._settle(scripts, wid, [item[1]], result)

    def consume_doorbells(self, ids: list[str]) -> None:
        """Several partitions: block on the doorbells of ``ids`` at once; take from the
        inboxes the notes name."""
        direct = Direct(self.client, read_timeout=5.0, route=self.keys.workers)
        bells = [self.keys.of(partitions.home(w, self.count)).doorbell(w) for w in ids]
        owner = {b.encode(): w for b, w in zip(bells, ids)}
        result = codec.pack(None)
        while time.monotonic() < self.until:
            k = random.randrange(len(bells))
            reply = direct.call("BLMPOP", 1, len(bells), *bells[k:], *bells[:k], "LEFT",
                                "COUNT", 64)
            if not reply:
                continue
            bell, notes = as_list(reply)
            wid = owner[bytes(bell)]
            for p in sorted({int(n) for n in as_bytes_list(notes) if n.isdigit()}):
                if p >= self.count:
                    continue
                scripts = self.parts[p]
                self._settle(scripts, wid, scripts.take_counted(wid, 1, fetched=False)[0],
                             result)

    def _settle(self, scripts: Scripts, wid: str, entries: list[bytes], result: bytes
                ) -> None:
        """Acknowledge what was taken, and what each acknowledgement took after it."""
        while entries:
            lease = signals.parse_lease(entries[0])
            if lease is None:
                return
            self._took(int(time.time() * 1000), lease)
            entries = self._ack(scripts, wid, lease, result)

    def report(self) -> dict[str, Any]:
        with self.lock:
            lat = list(self.latencies)
            return {"completed": self.completed, "refused": self.refused,
                    "heartbeats": self.heartbeats, "sweep_commands": self.sweeps,
                    "partitions": self.count, "workers": len(self.ids),
                    "slowest_heartbeat_round_s": self.slowest_round_s,
                    "latency_p50_ms": percentile(lat, 0.5),
                    "latency_p99_ms": percentile(lat, 0.99),
                    "latency_samples": len(lat), "error": self.error}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--beats", choices=("full", "real"), default="full",
                        help="full: every beat a full one (workload 7); real: the worker's"
                             " light beats, in full every FULL_EVERY-th")
    parser.add_argument("--sweep", choices=("take", "llen"), default="llen",
                        help="how an idle worker looks in its inboxes (several partitions)")
    parser.add_argument("--prefix", default="", help="worker ids: sim-PREFIX-NNNNN")
    args = parser.parse_args()
    settings = Settings.from_env()
    sim = Sim(settings, args.workers, args.queue, time.monotonic() + args.seconds,
              args.beats, args.sweep, args.prefix)

    def stop(_signum: int, _frame: object) -> None:
        sim.until = 0.0  # every loop ends within a second or two; then the counts are printed

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, lambda _s, _f: sim.start_window())
    sim.register_all()  # at once, in every partition
    threads = [threading.Thread(target=sim.guarded(sim.beat), daemon=True)]
    share = max(1, -(-len(sim.ids) // args.consumers))
    body = sim.consume if sim.count == 1 else sim.consume_doorbells
    if sim.count > 1:
        threads.append(threading.Thread(target=sim.guarded(sim.sweep), daemon=True))
    threads += [threading.Thread(target=sim.guarded(body, sim.ids[i:i + share]), daemon=True)
                for i in range(0, len(sim.ids), share)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 10)
    print(json.dumps(sim.report()), flush=True)


if __name__ == "__main__":
    main()
