"""Prefect 2/3's ``prefect.tasks`` cache key function: ``task_input_hash``.

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))

caches a task's result by its inputs, as Prefect's does: here it stands for Prefect 1's
``cache_validator=all_inputs`` with ``cache_for=cache_expiration`` (balancer/caching.py),
which workers apply across every run of the cluster. A key function of your own is not
taken: it would have to run on the worker before the task, and its key would not be
signed with the call.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def task_input_hash(context: Any, arguments: dict[str, Any]) -> str:
    """A hash of the task's inputs (Prefect's signature). Given to ``@task`` as
    ``cache_key_fn``, it is not called: the worker digests the inputs itself."""
    name = getattr(getattr(context, "task", None), "name", "") or ""
    blob = json.dumps([name, arguments], sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()


__all__ = ["task_input_hash"]
