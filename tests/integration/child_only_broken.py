"""A task module that imports in a worker's supervisor but not in its pool processes
(where BALANCER_WORKER_CHILD is set): the worker must say why it cannot start."""

import os

if os.environ.get("BALANCER_WORKER_CHILD") == "1":
    raise RuntimeError("this module refuses pool processes")
