"""`worker start` or `balancer serve` as a process of another release runs them: it
reports another version of the formats (common/protocol.py: VERSION) and release, as one
of an older or newer release does.
``python -m tests.integration.other_release worker start ...`` or ``... balancer serve``."""

from __future__ import annotations

import sys

from balancer.common import protocol

protocol.VERSION += 1  # a worker reports it in each heartbeat, a leader stores it
protocol.release = lambda: "9.9.9"  # type: ignore[assignment]

from balancer.worker.cli import main as worker_main  # noqa: E402

from balancer.cli import main as balancer_main  # noqa: E402

if __name__ == "__main__":
    program = sys.argv.pop(1)
    sys.exit({"worker": worker_main, "balancer": balancer_main}[program]())
