"""Named queues, as users declare them next to their tasks."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class Queue:
    """A named queue. ``priority``: higher is served first (queues without one are equal);
    ``concurrency_limit``: most tasks of this queue leased at once across the cluster.
    Settings left as None keep what the cluster has (see ``balancer queue set``)."""

    name: str
    priority: int | None = None
    concurrency_limit: int | None = None

    def __post_init__(self) -> None:
        check_queue_name(self.name)
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise ValueError(f"queue {self.name!r}: concurrency_limit must be at least 1")


def check_queue_name(name: str) -> None:
    if not isinstance(name, str) or not name or name == "*" or any(c.isspace() for c in name):
        raise ValueError(f"invalid queue name {name!r}: use a non-empty name without spaces")
