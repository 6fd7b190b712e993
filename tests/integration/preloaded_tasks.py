"""Tasks that say which process imported their module and which one runs them."""

from __future__ import annotations

import os
import sys

from balancer import task

IMPORTED_IN = os.getpid()
# Whether the worker's command (its supervisor's modules) was imported before this module.
AFTER_THE_COMMAND = "balancer.worker.supervisor" in sys.modules


@task
def where(call: int) -> list[int]:
    """[the pid that imported this module, the pid running this call]."""
    del call
    return [IMPORTED_IN, os.getpid()]


@task
def imported_after_the_command() -> list[object]:
    """[the pid that imported this module, the pid running this call, whether the
    worker's command had been imported in that process before this module]."""
    return [IMPORTED_IN, os.getpid(), AFTER_THE_COMMAND]
