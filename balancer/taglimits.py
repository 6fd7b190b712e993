"""Per-tag concurrency limits, as Prefect 1's task tag limits: at most N tasks carrying a tag
leased at once across the cluster; the others wait in their queues (they are not failed)
and go as places free.

    balancer.set_tag_limit("db", 2)      # or: balancer tag limit db 2
    balancer.set_tag_limit("db", None)   # remove it: balancer tag limit db --remove
    balancer.tag_limits()                # [TagLimit(name='db', limit=2, leased=1)]

The limits live in ``tag-limits`` (tag -> N). The dispatcher reads them with the queue
configs, and only while some tag has a limit does it read the tags of the tasks it is about
to lease and the counts of ``tag-inflight`` (``scheduling.admit_tagged`` decides); a task
at its tag's limit is passed over without holding up the tasks behind it. A lease that
counts against tags carries "t" in its token (common/protocol.py), and every script that
ends a lease gives its places back (``untag`` in _prelude.lua). Tasks with a limited tag
never take a standing offer (submit_small.lua): only the dispatcher counts.

A limit set or lowered while tasks with the tag run applies to the leases made from then
on: leases made before it was set do not count against it (as a queue's concurrency
limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis


def bad_tag(tag: object) -> bool:
    """A tag no task can carry (caching.tag_list checks a task's by this): not a string,
    empty, or holding a comma (a task record stores its tags comma-joined)."""
    return not isinstance(tag, str) or not tag or "," in tag


def check_tag_name(tag: object) -> None:
    if bad_tag(tag):
        raise ValueError(f"invalid tag {tag!r}: use a non-empty name without commas")


@dataclass(frozen=True)
class TagLimit:
    """A tag's limit and how many leases count against it now."""

    name: str
    limit: int | None
    leased: int = 0


def parse_limits(raw: dict[bytes, bytes]) -> tuple[dict[str, int], list[str]]:
    """The limits of ``tag-limits`` as read, and what in it was unusable (a value written
    by hand that is not a positive integer, a name that is not UTF-8): such a tag reads as
    unlimited, and the problem is told to the caller."""
    limits: dict[str, int] = {}
    problems: list[str] = []
    for name, value in raw.items():
        try:
            tag, limit = name.decode(), int(value.decode())
        except (UnicodeDecodeError, ValueError):
            problems.append(f"tag {name[:40]!r}: limit {value[:40]!r} is not an integer;"
                            " the tag is unlimited")
            continue
        if limit < 1:
            problems.append(f"tag {tag!r}: limit {limit} is below 1; the tag is unlimited")
            continue
        limits[tag] = limit
    return limits, problems


def set_tag_limit(tag: str, limit: int | None, client: redis.Redis | None = None, *,
                  redis_url: str | None = None, namespace: str | None = None) -> None:
    """Let at most ``limit`` tasks tagged ``tag`` be leased at once across the cluster;
    None removes the limit. The cluster: ``client``, else ``redis_url``, else
    ``BALANCER_REDIS_URL`` (else the embedded cluster). Raises ValueError for a tag or a
    limit the cluster cannot take."""
    from balancer import admin
    from balancer.client import resolve_url, talking
    from balancer.common import partitions
    from balancer.common.keys import Keys

    conn, settings = resolve_url(client, redis_url, namespace)
    keys = Keys(settings.namespace)
    with talking(conn):
        for part in partitions.every(conn, keys):
            admin.configure_tag(conn, part, tag, limit)  # it holds in each partition


def tag_limits(client: redis.Redis | None = None, *, redis_url: str | None = None,
               namespace: str | None = None) -> list[TagLimit]:
    """Every tag with a limit or with leases counted against one, by name."""
    from balancer import admin
    from balancer.client import resolve_url, talking
    from balancer.common.keys import Keys

    conn, settings = resolve_url(client, redis_url, namespace)
    with talking(conn):
        return admin.tag_rows(conn, Keys(settings.namespace))


def parse_counts(raw: dict[bytes, bytes]) -> dict[str, int]:
    """The leases counted per tag (``tag-inflight``) as read; an entry that is not a count
    (written by hand) is left out rather than stopping whoever reads it."""
    counts: dict[str, int] = {}
    for name, value in raw.items():
        try:
            counts[name.decode()] = int(value.decode())
        except (UnicodeDecodeError, ValueError):
            continue
    return counts


def limit_rows(limits: dict[bytes, bytes], leased: dict[bytes, bytes]) -> list[TagLimit]:
    """``TagLimit`` rows from the two hashes as read (``balancer tag ls``, status)."""
    parsed, _ = parse_limits(limits)
    counts = parse_counts(leased)
    return [TagLimit(t, parsed.get(t), counts.get(t, 0))
            for t in sorted(set(parsed) | {t for t, n in counts.items() if n})]


def merge_rows(per_partition: list[list[TagLimit]]) -> list[TagLimit]:
    """The rows of several partitions as one: a tag's limit (each partition holds it; the
    first that has one), its leases summed over them."""
    if len(per_partition) == 1:
        return per_partition[0]
    tags: dict[str, TagLimit] = {}
    for rows in per_partition:
        for t in rows:
            row = tags.get(t.name)
            tags[t.name] = t if row is None else TagLimit(
                t.name, row.limit if row.limit is not None else t.limit, row.leased + t.leased)
    return sorted(tags.values(), key=lambda t: t.name)


def table(tags: list[TagLimit], indent: str = "") -> list[str]:
    """The rows as ``balancer tag ls`` and ``balancer status`` print them."""
    lines = [f"{indent}{'tag':<24} {'leased':>7} {'limit':>6}"]
    for t in tags:
        limit = "-" if t.limit is None else str(t.limit)
        lines.append(f"{indent}{t.name:<24} {t.leased:>7} {limit:>6}")
    return lines
