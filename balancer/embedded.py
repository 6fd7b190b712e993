"""The embedded cluster: an in-process Redis-protocol broker (fakeredis), the real
dispatcher and a real worker (thread pool, every queue) in background threads.

It lets ``flow.run()`` work with nothing installed but the package, through the same
scripts and code paths as a production cluster. It is the one place that puts the
dispatcher and the worker together, so it imports the worker package lazily.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

import redis

from balancer.common.connection import connect
from balancer.common.keys import Keys
from balancer.common.settings import Settings
from balancer.dispatcher import Dispatcher
from balancer.scheduling import ALL_QUEUES

log = logging.getLogger("balancer.embedded")

URL = "memory://embedded"

_lock = threading.Lock()
_cluster: EmbeddedCluster | None = None


class EmbeddedCluster:
    def __init__(self, settings: Settings, concurrency: int | None = None) -> None:
        from balancer.worker.supervisor import Worker

        self.settings = settings.replace(redis_url=URL)
        # The worker runs in this process: the tasks of the script it runs are its own.
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        folders = (os.path.dirname(os.path.abspath(main)),) if main else ()
        self.dispatcher = Dispatcher(connect(URL), self.settings, dispatcher_id="embedded")
        self.worker = Worker(connect(URL), self.settings, queues=(ALL_QUEUES,),
                             concurrency=concurrency or max(4, os.cpu_count() or 1),
                             pool="thread", name="embedded-worker", allow=folders)
        self.thread = threading.Thread(target=self.dispatcher.run, name="embedded-dispatcher",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.worker.start()
        log.info("embedded cluster started (set BALANCER_REDIS_URL to use a real one)")

    def stop(self) -> None:
        self.worker.shutdown(grace=5)
        self.dispatcher.stop()
        self.thread.join(5)


def client(settings: Settings) -> redis.Redis:
    """A client of the embedded cluster, started on first use and stopped at exit."""
    global _cluster
    with _lock:
        if _cluster is None:
            _cluster = EmbeddedCluster(settings)
            _cluster.start()
            atexit.register(_cluster.stop)
    embedded = connect(URL)
    # fakeredis ignores the scripts' approximate trimming (XADD MAXLEN ~): trim the events
    # stream exactly here, once per run, so that a long-lived process keeps it capped.
    embedded.xtrim(Keys(settings.namespace).events, maxlen=settings.events_max,
                   approximate=False)
    return embedded
