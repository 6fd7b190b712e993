"""Tasks that say which process imported their module and which one runs them."""

from __future__ import annotations

import os

from balancer import task

IMPORTED_IN = os.getpid()


@task
def where(call: int) -> list[int]:
    """[the pid that imported this module, the pid running this call]."""
    del call
    return [IMPORTED_IN, os.getpid()]
