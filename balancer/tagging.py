"""Prefect's ``tags`` context manager: ``with tags("db", "etl"): load(rows)`` gives every
task run created in the block those tags, besides its own, as Prefect 1 and 2/3 do; so a
tag limit (``balancer tag limit db 2``) can bound calls of a task that is not tagged in
its decorator.

"Created in the block" means where the run is made: a call (or ``add_task``, ``map``)
inside ``with Flow(...)``, whose node keeps the block's tags until the flow is submitted;
a call, ``submit`` or ``map`` in a @flow function; a ``submit`` outside any flow. Blocks
nest: the inner adds to the outer. The tags live in a context variable: each thread and
each async task has its own.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator

from balancer.caching import TAGS_LIMIT
from balancer.taglimits import bad_tag

_scope: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "balancer_tags", default=())


@contextlib.contextmanager
def tags(*names: str) -> Iterator[tuple[str, ...]]:
    """Tag every task run created in the block (and in blocks inside it) with ``names``.
    Yields the tags now in force."""
    bad = [n for n in names if bad_tag(n)]
    if bad:
        raise ValueError(f"tags: {bad[0]!r} cannot be a tag (use a non-empty string without"
                         " commas)")
    token = _scope.set(tuple(sorted({*_scope.get(), *names})))
    try:
        yield _scope.get()
    finally:
        _scope.reset(token)


def current() -> tuple[str, ...]:
    """The tags of the blocks the caller is in (sorted), or ()."""
    return _scope.get()


def merged(task_name: str, own: Iterable[str], extra: Iterable[str]) -> list[str]:
    """A task's own tags and the blocks', sorted and distinct, as a record keeps them;
    ValueError past the TAGS_LIMIT a record holds."""
    out = sorted({*own, *extra})
    if len(out) > TAGS_LIMIT:
        raise ValueError(f"task {task_name!r}: {len(out)} tags with those of the"
                         f" `with tags(...)` blocks around it, over the limit of {TAGS_LIMIT}")
    return out
