"""Prefect 2/3's ``prefect.tasks`` helpers: ``task_input_hash`` and ``exponential_backoff``.

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))

caches a task's result by its inputs, as Prefect's does: here it stands for Prefect 1's
``cache_validator=all_inputs`` with ``cache_for=cache_expiration`` (balancer/caching.py),
which workers apply across every run of the cluster. A key function of your own is
called by the worker before each run (balancer/cache_policies.py).
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


class exponential_backoff:  # Prefect's name
    """``@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10))``:
    Prefect's delays of ``backoff_factor * 2**n`` before retry n+1 (10, 20, 40 s), which is
    how every retry waits here: it stands for ``retry_delay=backoff_factor``."""

    def __init__(self, backoff_factor: float) -> None:
        self.backoff_factor = backoff_factor

    def __call__(self, retries: int) -> list[float]:
        return [self.backoff_factor * 2**n for n in range(retries)]


__all__ = ["exponential_backoff", "task_input_hash"]
