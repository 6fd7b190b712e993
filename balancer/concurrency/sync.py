"""``from balancer.concurrency.sync import concurrency, rate_limit``: Prefect's import path
(``prefect.concurrency.sync``) for the ``with`` form of ``balancer.concurrency`` and its
blocking ``rate_limit``."""

from balancer.concurrency import concurrency, rate_limit

__all__ = ["concurrency", "rate_limit"]
