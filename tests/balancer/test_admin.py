"""admin: what the CLI and the dashboard share to act on a running cluster."""

from __future__ import annotations

import fakeredis
from balancer.common.keys import Keys

from balancer import admin


def test_a_quarantined_task_is_found_in_the_partition_whose_dlq_holds_it() -> None:
    client = fakeredis.FakeRedis()
    every = [Keys("ns", p) for p in range(3)]
    client.zadd(every[0].dlq, {"a": 1})
    client.zadd(every[2].dlq, {"b": 2, "c": 3})
    held = admin.dlq_holders(client, every, ["b", "a", "nowhere"])
    assert held == {"b": every[2], "a": every[0]}  # one not quarantined is left out
    assert admin.dlq_holders(client, every) == {"a": every[0], "b": every[2], "c": every[2]}
    assert admin.dlq_holders(client, every[:1], ["b"]) == {}
