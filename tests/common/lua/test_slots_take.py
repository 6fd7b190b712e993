"""slots_take.lua: slots of concurrency limits are taken all or none, never past a limit,
and a holder's slots come back once its lease ends."""

from __future__ import annotations

import time

from tests.common.lua.db import Db


def _holders(db: Db, name: str) -> list[str]:
    return [m.decode() for m in db.client.zrange(db.keys.concurrency(name), 0, -1)]


def test_a_limit_s_slots_are_taken_until_none_is_left(db: Db) -> None:
    assert db.scripts.slots_take("h1", [("db", 3)], 2, 60_000) == (1, 1)
    assert db.scripts.slots_take("h2", [("db", 3)], 2, 60_000) == (0, "db")  # 2 + 2 > 3
    assert db.scripts.slots_take("h2", [("db", 3)], 1, 60_000) == (1, 1)
    assert sorted(_holders(db, "db")) == ["h1|2", "h2|1"]
    assert db.scripts.slots_take("h3", [("db", 3)], 1, 60_000) == (0, "db")
    assert db.scripts.slots_take("h3", [("db", 4)], 1, 60_000) == (1, 1)  # raised to 4


def test_occupying_more_than_a_limit_holds_is_refused_for_good(db: Db) -> None:
    assert db.scripts.slots_take("h1", [("db", 2)], 3, 60_000) == (-1, "db")
    assert _holders(db, "db") == []


def test_several_limits_are_taken_all_or_none(db: Db) -> None:
    both = [("db", 2), ("api", 1)]
    assert db.scripts.slots_take("h1", [("api", 1)], 1, 60_000) == (1, 1)
    assert db.scripts.slots_take("h2", both, 1, 60_000) == (0, "api")
    assert _holders(db, "db") == []  # nothing of db taken while api had no room
    db.client.zrem(db.keys.concurrency("api"), "h1|1")  # h1 gives its slot back
    assert db.scripts.slots_take("h2", both, 1, 60_000) == (1, 2)
    assert _holders(db, "db") == ["h2|1"] and _holders(db, "api") == ["h2|1"]


def test_a_holder_whose_lease_ended_holds_nothing(db: Db) -> None:
    assert db.scripts.slots_take("dead", [("db", 1)], 1, 1) == (1, 1)  # 1 ms, not renewed
    time.sleep(0.01)
    assert db.scripts.slots_take("h2", [("db", 1)], 1, 60_000) == (1, 1)
    assert _holders(db, "db") == ["h2|1"]
