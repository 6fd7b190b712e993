"""Client code of the security tests, run as a process with BALANCER_REDIS_URL set:
``python -m tests.integration.secure_client MODE [ARG]``. Prints one JSON report line.

Modes: ``chain`` runs a two-task flow; ``full`` runs a flow with dependencies, a retry
that succeeds and a failure that fails its dependents, then two one-task flows (the
second may find a standing offer), a @flow function and a flow started later; ``run``
only calls ``flow.run()`` (to see how it fails).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from balancer import Flow, flow
from tests.integration.secure_tasks import broken, double, flaky, plus


def chain() -> dict[str, Any]:
    with Flow("secure-chain") as flow:
        total = double(plus(1, 2))
    run = flow.submit()
    return {"state": run.wait(timeout=60), "result": run.result(total)}


def full(marker: str) -> dict[str, Any]:
    with Flow("secure-full") as flow:
        first = flaky(marker, 2)
        second = plus(first, 3)
        failed = broken(second)
        skipped = double(failed)
        last = plus(second, 10)
    run = flow.submit()
    waiting = run.why()  # what holds each task, read as this client's user
    state = run.wait(timeout=60)
    states = {name: run.task_state(ref) for name, ref in
              (("first", first), ("second", second), ("failed", failed),
               ("skipped", skipped), ("last", last))}
    error = run.error(failed)
    singles = []
    for n in (1, 2):
        with Flow(f"secure-single-{n}") as one:
            ref = double(n)
        single = one.submit()
        singles.append([single.wait(timeout=60), single.result(ref)])
    with Flow("secure-later") as later:  # started later: its first task delayed
        ref = double(5)
    delayed = later.submit(delay=0.5)
    return {"state": state, "states": states, "last": run.result(last),
            "error": error.type if error else None, "waiting": sorted(waiting),
            "singles": singles, "dynamic": dynamic(),
            "delayed": [delayed.wait(timeout=60), delayed.result(ref)]}


@flow(name="secure-dynamic")
def dynamic() -> dict[str, Any]:
    """A @flow function: its open run's scripts (extend, release, close) under this
    client's user. ``later`` waits for ``total`` (released by the client); ``skipped``
    for ``failed`` (released as upstream_failed)."""
    total = plus.submit(1, 2)
    later = double.submit(total)
    failed = broken.submit(1)
    skipped = double.submit(failed)
    return {"later": later.result(), "failed": failed.wait().name,
            "skipped": skipped.wait().name, "mapped": double.map([1, 2]).result()}


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    mode = sys.argv[1]
    if mode == "run":
        with Flow("secure-run") as flow:
            double(1)
        flow.run(timeout=30)
        report: dict[str, Any] = {"state": "completed"}
    elif mode == "chain":
        report = chain()
    else:
        report = full(sys.argv[2])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
