"""Benchmark what an idle embedded cluster costs its process: run one flow on it (no Redis
URL: the in-process broker, its dispatcher and its worker of 4 slots), then measure the
process's CPU for SECONDS while nothing runs, and how many fetches the worker's slots made
meanwhile. An idle cluster should wait, not poll: before the embedded broker's BLMOVE
blocked (common/memoryserver.py) it kept about half a core busy here.

It prints figures and never asserts speed. Run from anywhere:

    python bench/embedded_idle.py [--seconds S] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from balancer import task  # noqa: E402


@task
def noop() -> None:
    """Runs on the embedded worker: a task of the script it runs (its own folder)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for name in [n for n in os.environ if n.startswith("BALANCER_")]:
        del os.environ[name]  # the embedded cluster, whatever the shell says

    import psutil
    from balancer.worker.inbox import Inbox

    from balancer import Flow

    fetches = 0
    fetch = Inbox._fetch

    def counted(self: Inbox) -> object:
        nonlocal fetches
        fetches += 1
        return fetch(self)

    Inbox._fetch = counted  # type: ignore[method-assign,assignment]
    with Flow("idle-probe") as flow:
        noop()
    state = flow.run(timeout=60, quiet=True).state
    time.sleep(1.0)  # the run's last acknowledgements
    me = psutil.Process()
    cpu0, fetches0, began = sum(me.cpu_times()[:2]), fetches, time.perf_counter()
    time.sleep(args.seconds)
    took = time.perf_counter() - began
    figures = {"flow": state, "seconds": round(took, 2),
               "idle_cpu_share": (sum(me.cpu_times()[:2]) - cpu0) / took,
               "fetches_per_s": (fetches - fetches0) / took}
    print(f"an idle embedded cluster, {took:.1f} s after one flow ({state}):"
          f" {100 * figures['idle_cpu_share']:.1f}% of a core,"
          f" {figures['fetches_per_s']:.1f} inbox fetches a second")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
