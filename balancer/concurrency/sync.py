"""``from balancer.concurrency.sync import concurrency``: Prefect's import path
(``prefect.concurrency.sync``) for the ``with`` form of ``balancer.concurrency``."""

from balancer.concurrency import concurrency

__all__ = ["concurrency"]
