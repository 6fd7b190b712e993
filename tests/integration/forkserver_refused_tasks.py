"""A task module that raises when a pool's forkserver imports it (in its preload, under
multiprocessing's main process: a pool process is named as such by then), while the pool
processes import it as usual."""

from __future__ import annotations

import multiprocessing
import sys

if ("balancer.worker.preload" in sys.modules
        and multiprocessing.current_process().name == "MainProcess"):
    raise RuntimeError("this module refuses to be imported by a forkserver")

from tests.integration.preloaded_tasks import where

__all__ = ["where"]
