"""Tasks that say which process imported their module and which one runs them."""

from __future__ import annotations

import os
import sys

import redis.utils

from balancer import task

IMPORTED_IN = os.getpid()
# What the importing process had done before it imported this module: the worker's
# command (its supervisor's modules) imported, redis-py's version read (it reads it from
# its package's metadata once, for every connection, where it caches it: redis-py 8.2
# does, 8.1 reads it at each connection, and there is nothing to read ahead), the IDNA
# codec imported (a connection to a host name needs it).
_version_cache = getattr(getattr(redis.utils, "get_lib_version", None), "cache_info", None)
PREPARED = {"command": "balancer.worker.supervisor" in sys.modules,
            "redis version": _version_cache is None or _version_cache().currsize == 1,
            "idna": "encodings.idna" in sys.modules}


@task
def where(call: int) -> list[int]:
    """[the pid that imported this module, the pid running this call]."""
    del call
    return [IMPORTED_IN, os.getpid()]


@task
def prepared() -> list[object]:
    """[the pid that imported this module, the pid running this call, what that process
    had done before it imported this module (``PREPARED``)]."""
    return [IMPORTED_IN, os.getpid(), PREPARED]
