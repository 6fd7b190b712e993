"""`worker start` as a worker of another release runs it: it reports another version of
the formats (common/protocol.py: VERSION) and release, as one of an older or newer
release does. ``python -m tests.integration.other_release start ...``"""

from __future__ import annotations

import sys

from balancer.common import protocol

protocol.VERSION += 1  # the worker reports it in each heartbeat (worker/supervisor.py)
protocol.release = lambda: "9.9.9"  # type: ignore[assignment]

from balancer.worker.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
