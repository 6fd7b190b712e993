"""A task module that raises when a pool's forkserver imports it (the one process of the
worker that runs as ``python -c``: the pool processes forked from it take their worker's
argv), while its worker and the pool processes import it as usual."""

from __future__ import annotations

import sys

if sys.argv[:1] == ["-c"]:
    raise RuntimeError("this module refuses to be imported by a forkserver")

from tests.integration.preloaded_tasks import where

__all__ = ["where"]
