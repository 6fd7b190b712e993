"""What tasks that spin past their timeout leave behind on a thread-pool worker: one worker
of ``--slots`` thread slots, a private Redis and ``balancer serve``; a flow of ``--tasks``
no-ops, then ``--spins`` tasks looping in Python past a 1 s timeout, then the same flow of
no-ops again. It prints the no-ops' tasks per second before and after, the worker's CPU
while idle after (in cores), and its thread count.

    python bench/runaway_bench.py [--slots 2] [--tasks 2000] [--spins 4] [--json PATH]

A thread the worker gave up on and never stopped keeps looping: it takes the GIL from
every slot of its worker, and its CPU. It runs the code of the interpreter running it
(another venv's python measures another commit) and never asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis
from balancer.common.keys import Keys
from balancer.common.settings import Settings

import balancer
from balancer import Flow

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.own_cluster import stop
from bench.redis_servers import RedisServer, wait_until

TASKS = '''
from balancer import task

@task(queue_name="runaway", timeout=1.0)
def spin() -> None:
    while True:
        pass

@task(queue_name="runaway")
def noop(i: int) -> int:
    return i
'''


def _noops(client: redis.Redis, tasks: object, n: int) -> float:
    with Flow("noops") as flow:
        for i in range(n):
            tasks.noop(i)  # type: ignore[attr-defined]
    start = time.perf_counter()
    if flow.submit(client).wait(timeout=600) != "completed":
        raise RuntimeError("the no-ops did not complete")
    return n / (time.perf_counter() - start)


def _idle_cpu(pid: int, seconds: float = 2.0) -> float:
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    return (after.user + after.system - before.user - before.system) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--spins", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    checkout = Path(balancer.__file__).resolve().parent.parent
    folder = Path(tempfile.mkdtemp(prefix="runaway-"))
    (folder / "runaway_tasks.py").write_text(TASKS)
    sys.path.insert(0, str(folder))
    import runaway_tasks  # type: ignore[import-not-found]

    server = RedisServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env.update(BALANCER_REDIS_URL=server.url, PYTHONPATH=f"{folder}{os.pathsep}{checkout}")
    procs = [subprocess.Popen([sys.executable, "-m", "balancer.cli", "serve"], cwd=folder,
                              env=env, stderr=subprocess.DEVNULL)]
    worker = subprocess.Popen([sys.executable, "-m", "balancer.worker.cli", "start", "--pool",
                               "thread", "--concurrency", str(args.slots), "--queue",
                               "runaway", "--import", "runaway_tasks"], cwd=folder, env=env,
                              stderr=subprocess.DEVNULL)
    procs.append(worker)
    try:
        client = redis.Redis.from_url(server.url)
        workers = Keys(Settings().namespace).workers
        wait_until(lambda: client.zcard(workers) >= 1, "the worker to register")
        print(f"code: {checkout}; 1 worker x {args.slots} thread slots")
        _noops(client, runaway_tasks, 200)  # warm
        figures: dict[str, float] = {}
        for phase in ("before", "after"):
            if phase == "after":
                with Flow("spins") as flow:
                    for _ in range(args.spins):
                        runaway_tasks.spin()
                state = flow.submit(client).wait(timeout=120)
                print(f"{args.spins} tasks spun past their timeout ({state}), then:")
            figures[f"{phase}_per_s"] = _noops(client, runaway_tasks, args.tasks)
            figures[f"{phase}_idle_cores"] = _idle_cpu(worker.pid)
            figures[f"{phase}_threads"] = psutil.Process(worker.pid).num_threads()
            print(f"{phase + ':':<7} {figures[f'{phase}_per_s']:8.0f} no-ops/s, idle CPU"
                  f" {figures[f'{phase}_idle_cores']:.2f} cores,"
                  f" {figures[f'{phase}_threads']:.0f} threads", flush=True)
        print(f"after / before: {figures['after_per_s'] / figures['before_per_s']:.2f}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        stop(procs)
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
