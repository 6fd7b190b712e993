"""Named queues, as users declare them next to their tasks."""

from __future__ import annotations

from dataclasses import dataclass

from balancer.options import check_queue_options, plain

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
        self.check()
        object.__setattr__(self, "priority", plain(self.priority))
        object.__setattr__(self, "concurrency_limit", plain(self.concurrency_limit))

    def check(self) -> None:
        """Raise ValueError naming this queue and the setting the cluster could not take:
        the dispatcher reads both back as integers."""
        check_queue_name(self.name)
        check_queue_options(f"queue {self.name!r}", self.priority, self.concurrency_limit)


def check_queue_name(name: str) -> None:
    if not isinstance(name, str) or not name or name == "*" or any(c.isspace() for c in name):
        raise ValueError(f"invalid queue name {name!r}: use a non-empty name without spaces")
