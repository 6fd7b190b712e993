"""A task module that starts a thread at import (a metrics exporter, a connection
keeper), which a fork does not carry over to the pool processes."""

from __future__ import annotations

import threading

from balancer import task

_KEEPER = threading.Thread(target=threading.Event().wait, name="keeper", daemon=True)
_KEEPER.start()


@task
def keeper_alive() -> bool:
    return _KEEPER.is_alive()
