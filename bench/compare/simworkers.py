"""Many simulated workers in one process, for workload 7 (dispatcher scale).

Each simulated worker heartbeats like a real one (``Scripts.heartbeat`` with a
``WorkerInfo`` of one slot) and acknowledges each lease it is given (``Scripts.ack``, as
a worker does for a task that ran under 50 ms) without running anything. A few threads
each block on the inboxes of a share of the workers at once. Prints a JSON line of counts when done.

    python -m bench.compare.simworkers --workers 1000 --queue bench-sim --seconds 20
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import threading
import time
from collections.abc import Callable

from balancer.common import codec, signals
from balancer.common.connection import connect
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.scripts import Done, Scripts
from balancer.common.settings import Settings

# The ack script gained a finish time; accept both forms while it settles.
ACK_TAKES_FINISHED = "finished_ms" in inspect.signature(Scripts.ack).parameters


class Sim:
    def __init__(self, settings: Settings, n: int, queue: str, until: float) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.ids = [f"sim-{os.getpid()}-{i:05d}" for i in range(n)]
        self.queue = queue
        self.until = until
        self.ttl_ms = int(settings.worker_timeout * 1000)
        self.lock = threading.Lock()
        self.completed = 0
        self.refused = 0
        self.heartbeats = 0
        self.slowest_round_s = 0.0
        self.error = ""

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

    def heartbeat_all(self, scripts: Scripts) -> None:
        started = time.monotonic()
        for wid in self.ids:
            info = WorkerInfo(id=wid, queues=(self.queue,), capacity=1, host="sim",
                              pid=os.getpid(), pool="thread")
            scripts.heartbeat(wid, info.to_blob(), self.ttl_ms)
        self.heartbeats += len(self.ids)
        self.slowest_round_s = max(self.slowest_round_s, time.monotonic() - started)

    def beat(self) -> None:
        scripts = Scripts(connect(self.settings.server_url), self.keys)
        while time.monotonic() < self.until:
            started = time.monotonic()
            self.heartbeat_all(scripts)
            time.sleep(max(0.0, self.settings.heartbeat_interval - (time.monotonic() - started)))

    def consume(self, ids: list[str]) -> None:
        client = connect(self.settings.server_url)
        scripts = Scripts(client, self.keys)
        owner = {self.keys.inbox(w).encode(): w for w in ids}
        inboxes = [self.keys.inbox(w) for w in ids]
        result = codec.pack(None)
        ttl = int(self.settings.result_ttl * 1000)
        while time.monotonic() < self.until:
            item = client.blpop(inboxes, timeout=1)
            if item is None:
                continue
            wid, lease = owner[item[0]], signals.parse_lease(item[1])
            if lease is None:
                continue
            now_ms = int(time.time() * 1000)
            done = Done(lease.task_id, lease.token, lease.queue, lease.flow, now_ms, result)
            ok = (scripts.ack(wid, [done], ttl, now_ms) if ACK_TAKES_FINISHED
                  else scripts.ack(wid, [done], ttl))[0]  # type: ignore[call-arg]
            with self.lock:
                if ok:
                    self.completed += 1
                else:
                    self.refused += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--consumers", type=int, default=4)
    args = parser.parse_args()
    settings = Settings.from_env()
    sim = Sim(settings, args.workers, args.queue, time.monotonic() + args.seconds)

    def stop(_signum: int, _frame: object) -> None:
        sim.until = 0.0  # every loop ends within a second; then the counts are printed

    signal.signal(signal.SIGTERM, stop)
    sim.heartbeat_all(Scripts(connect(settings.server_url), sim.keys))  # register at once
    threads = [threading.Thread(target=sim.guarded(sim.beat), daemon=True)]
    share = max(1, -(-len(sim.ids) // args.consumers))
    threads += [threading.Thread(target=sim.guarded(sim.consume, sim.ids[i:i + share]),
                                 daemon=True) for i in range(0, len(sim.ids), share)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 10)
    print(json.dumps({"completed": sim.completed, "refused": sim.refused,
                      "heartbeats": sim.heartbeats,
                      "slowest_heartbeat_round_s": sim.slowest_round_s,
                      "error": sim.error}), flush=True)


if __name__ == "__main__":
    main()
