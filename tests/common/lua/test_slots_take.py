"""slots_take.lua: slots of concurrency limits are taken all or none, never past a limit,
and a holder's slots come back once its lease ends; rate_limit's decay one after another
at the limit's rate, and only a limit with decay can be taken so."""

from __future__ import annotations

import time

from tests.common.lua.db import Db


def _holders(db: Db, name: str) -> list[str]:
    return [m.decode() for m in db.client.zrange(db.keys.concurrency(name), 0, -1)]


def test_a_limit_s_slots_are_taken_until_none_is_left(db: Db) -> None:
    assert db.scripts.slots_take("h1", [("db", 3, 0)], 2, 60_000)[:2] == (1, 1)
    assert db.scripts.slots_take("h2", [("db", 3, 0)], 2, 60_000)[:2] == (0, "db")  # 2 + 2 > 3
    assert db.scripts.slots_take("h2", [("db", 3, 0)], 1, 60_000)[:2] == (1, 1)
    assert sorted(_holders(db, "db")) == ["h1|2", "h2|1"]
    assert db.scripts.slots_take("h3", [("db", 3, 0)], 1, 60_000)[:2] == (0, "db")
    assert db.scripts.slots_take("h3", [("db", 4, 0)], 1, 60_000)[:2] == (1, 1)  # raised to 4


def test_occupying_more_than_a_limit_holds_is_refused_for_good(db: Db) -> None:
    assert db.scripts.slots_take("h1", [("db", 2, 0)], 3, 60_000)[:2] == (-1, "db")
    assert _holders(db, "db") == []


def test_several_limits_are_taken_all_or_none(db: Db) -> None:
    both = [("db", 2, 0), ("api", 1, 0)]
    assert db.scripts.slots_take("h1", [("api", 1, 0)], 1, 60_000)[:2] == (1, 1)
    assert db.scripts.slots_take("h2", both, 1, 60_000)[:2] == (0, "api")
    assert _holders(db, "db") == []  # nothing of db taken while api had no room
    db.client.zrem(db.keys.concurrency("api"), "h1|1")  # h1 gives its slot back
    assert db.scripts.slots_take("h2", both, 1, 60_000)[:2] == (1, 2)
    assert _holders(db, "db") == ["h2|1"] and _holders(db, "api") == ["h2|1"]


def test_a_holder_whose_lease_ended_holds_nothing(db: Db) -> None:
    assert db.scripts.slots_take("dead", [("db", 1, 0)], 1, 1)[:2] == (1, 1)  # 1 ms, not renewed
    time.sleep(0.01)
    assert db.scripts.slots_take("h2", [("db", 1, 0)], 1, 60_000)[:2] == (1, 1)
    assert _holders(db, "db") == ["h2|1"]


def _ends(db: Db, name: str) -> list[int]:
    return [int(score) for _, score in
            db.client.zrange(db.keys.concurrency(name), 0, -1, withscores=True)]


def test_rate_slots_decay_one_after_another_at_the_limits_rate(db: Db) -> None:
    """A burst fills the limit; each slot taken ends occupy / decay after the one before
    it, so past the burst the limit lets ``decay`` slots a second through."""
    api = [("api", 2, 4.0)]  # 2 slots, 4 a second: each one decays 250 ms after the last
    assert db.scripts.slots_take("r1", api, 1, 60_000, rate=True)[:2] == (1, 1)
    assert db.scripts.slots_take("r2", api, 1, 60_000, rate=True)[:2] == (1, 1)
    assert db.scripts.slots_take("r3", api, 1, 60_000, rate=True)[:2] == (0, "api")
    first, second = _ends(db, "api")
    assert second - first == 250
    assert sorted(_holders(db, "api")) == ["~r1|1", "~r2|1"]
    time.sleep((first - db.scripts.now_ms()) / 1000 + 0.01)  # the first has decayed
    assert db.scripts.slots_take("r3", api, 1, 60_000, rate=True)[:2] == (1, 1)
    assert _ends(db, "api")[-1] - second == 250  # after the one before it, not from now


def test_rate_slots_count_against_blocks_and_blocks_against_them(db: Db) -> None:
    limit = [("api", 2, 1.0)]
    assert db.scripts.slots_take("block", limit, 1, 60_000)[:2] == (1, 1)
    assert db.scripts.slots_take("r1", limit, 1, 60_000, rate=True)[:2] == (1, 1)
    assert db.scripts.slots_take("r2", limit, 1, 60_000, rate=True)[:2] == (0, "api")
    assert db.scripts.slots_take("block2", limit, 1, 60_000)[:2] == (0, "api")


def test_only_a_limit_with_decay_can_be_taken_as_a_rate(db: Db) -> None:
    both = [("db", 5, 0.0), ("api", 5, 1.0)]
    assert db.scripts.slots_take("r1", both, 1, 60_000, rate=True)[:2] == (-2, "db")
    assert _holders(db, "db") == [] and _holders(db, "api") == []
