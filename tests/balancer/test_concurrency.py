"""`with concurrency(...)` (balancer/concurrency.py) on fakeredis: a block holds its slots
while it runs, waits for them or times out, and gives them back; the limits' settings."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis
from balancer.common.keys import Keys

from balancer import ConcurrencyError, ConcurrencyTimeout, concurrency_limits
from balancer import set_concurrency_limit as set_limit
from balancer.concurrency import concurrency


def test_a_block_holds_its_slots_and_gives_them_back(fake: redis.Redis) -> None:
    set_limit("db", 2, fake, namespace="ns")
    with concurrency("db", occupy=2, client=fake, namespace="ns"):
        [row] = concurrency_limits(fake, namespace="ns")
        assert (row.name, row.limit, row.held) == ("db", 2, 2)
        with (pytest.raises(ConcurrencyTimeout, match="db: 1 slot"),
              concurrency("db", timeout_seconds=0.05, client=fake, namespace="ns")):
            pass
    assert concurrency_limits(fake, namespace="ns")[0].held == 0
    with concurrency("db", client=fake, namespace="ns"):  # free again
        pass


def test_a_waiting_block_goes_once_the_holder_ends(fake: redis.Redis) -> None:
    set_limit("db", 1, fake, namespace="ns")
    order: list[str] = []
    holding = threading.Event()

    def holder() -> None:
        with concurrency("db", client=fake, namespace="ns"):
            holding.set()
            time.sleep(0.2)
            order.append("first ends")

    other = threading.Thread(target=holder)
    other.start()
    assert holding.wait(5)
    with concurrency("db", timeout_seconds=10, client=fake, namespace="ns"):
        order.append("second starts")
    other.join()
    assert order == ["first ends", "second starts"]


def test_async_with_waits_without_blocking_its_loop(fake: redis.Redis) -> None:
    # Prefect's path: importing it once rebound the package's `asyncio` to it, and a
    # block that had to wait raised AttributeError (no `sleep`).
    from balancer.concurrency.asyncio import concurrency

    set_limit("db", 1, fake, namespace="ns")

    async def main() -> list[str]:
        seen: list[str] = []

        async def user(name: str) -> None:
            async with concurrency("db", client=fake, namespace="ns"):
                seen.append(f"{name} in")
                await asyncio.sleep(0.05)
                seen.append(f"{name} out")

        await asyncio.gather(user("a"), user("b"))
        return seen

    seen = asyncio.run(main())
    assert seen in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_what_cannot_be_taken_is_a_clear_error(fake: redis.Redis) -> None:
    set_limit("db", 1, fake, namespace="ns")
    with (pytest.raises(ConcurrencyError, match="fewer slots than occupy=2"),
          concurrency("db", occupy=2, client=fake, namespace="ns")):
        pass
    with concurrency("unset", client=fake, namespace="ns"):  # no limit: holds nothing back
        pass
    with (pytest.raises(ConcurrencyError, match="no concurrency limit 'unset' is set"),
          concurrency("unset", strict=True, client=fake, namespace="ns")):
        pass
    for bad in ([], [""], ["x\n"]):
        with pytest.raises(ValueError):
            concurrency(bad)
    with pytest.raises(ValueError, match="occupy must be a positive integer"):
        concurrency("db", occupy=0)
    with pytest.raises(ValueError, match="from 1 to 1000000"):
        set_limit("db", 0, fake, namespace="ns")


def test_a_held_lease_is_renewed_while_its_block_runs(
        fake: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALANCER_CONCURRENCY_LEASE", "0.3")
    set_limit("db", 1, fake, namespace="ns")
    with concurrency("db", client=fake, namespace="ns"):
        time.sleep(0.6)  # two leases long: renewed meanwhile, still held
        assert concurrency_limits(fake, namespace="ns")[0].held == 1


def test_a_lease_swept_while_its_block_stalled_is_said_once_and_no_longer_renewed(
        fake: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Another block's take swept the stalled block's slots: renewing can no longer hold
    them (ZADD XX), and the block's owner is told, once, that others may hold them."""
    monkeypatch.setenv("BALANCER_CONCURRENCY_LEASE", "0.3")
    set_limit("db", 1, fake, namespace="ns")
    set_limit("api", 1, fake, namespace="ns")
    with caplog.at_level("WARNING", logger="balancer"), \
            concurrency(["db", "api"], client=fake, namespace="ns"):
        fake.delete(Keys("ns").of(0).concurrency("db"))  # as slots_take.lua sweeps one
        time.sleep(0.5)  # more than one renewal
        held = {row.name: row.held for row in concurrency_limits(fake, namespace="ns")}
        assert held == {"db": 0, "api": 1}  # api's lease is still renewed
    lapsed = [r.getMessage() for r in caplog.records if "lapsed" in r.getMessage()]
    assert len(lapsed) == 1 and lapsed[0].startswith("concurrency db: ") \
        and "freed for other blocks" in lapsed[0], lapsed
    assert concurrency_limits(fake, namespace="ns")[1].held == 0  # api given back


def test_rate_limit_lets_a_burst_through_then_the_decay_rate(fake: redis.Redis) -> None:
    from balancer.concurrency.sync import rate_limit

    set_limit("api", 2, fake, slot_decay_per_second=20, namespace="ns")  # 50 ms a slot
    start = time.monotonic()
    through = []
    for _ in range(5):
        rate_limit("api", client=fake, namespace="ns")
        through.append(time.monotonic() - start)
    assert through[1] < 0.05  # the burst: the limit's slots at once
    for k in range(2, 5):  # each later one when the slot two before it has decayed
        assert through[k] >= (k - 1) * 0.05 - 0.002, (k, through)
    [row] = concurrency_limits(fake, namespace="ns")
    assert row.held == 2 and row.slot_decay_per_second == 20.0  # not given back: decaying


def test_rate_limit_waits_in_async_code_and_times_out_naming_the_limit(
        fake: redis.Redis) -> None:
    from balancer.concurrency.asyncio import rate_limit

    set_limit("api", 1, fake, slot_decay_per_second=0.01, namespace="ns")  # 100 s a slot

    async def main() -> None:
        await rate_limit("api", client=fake, namespace="ns")
        with pytest.raises(ConcurrencyTimeout, match="rate limit api: 1 slot"):
            await rate_limit("api", timeout_seconds=0.05, client=fake, namespace="ns")

    asyncio.run(main())
    with (pytest.raises(ConcurrencyTimeout),  # a block counts rate_limit's slots too
          concurrency("api", timeout_seconds=0.05, client=fake, namespace="ns")):
        pass


def test_rate_limit_refuses_a_limit_whose_slots_never_decay(fake: redis.Redis) -> None:
    from balancer.concurrency.sync import rate_limit

    set_limit("db", 3, fake, namespace="ns")
    with pytest.raises(ConcurrencyError, match=r"'db' has no slot decay.*--slot-decay-per-second"):
        rate_limit("db", client=fake, namespace="ns")
    assert concurrency_limits(fake, namespace="ns")[0].held == 0
    rate_limit("unset", client=fake, namespace="ns")  # no limit: holds nothing back
    with pytest.raises(ConcurrencyError, match="no concurrency limit 'unset' is set"):
        rate_limit("unset", strict=True, client=fake, namespace="ns")


def test_a_limit_s_decay_is_checked_set_and_removed_with_it(fake: redis.Redis) -> None:
    for bad in (-1, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="slot_decay_per_second must be a number"):
            set_limit("api", 2, fake, slot_decay_per_second=bad, namespace="ns")
    set_limit("api", 2, fake, slot_decay_per_second=1.5, namespace="ns")
    assert concurrency_limits(fake, namespace="ns")[0].slot_decay_per_second == 1.5
    set_limit("api", 3, fake, namespace="ns")  # set again without: no decay
    assert concurrency_limits(fake, namespace="ns")[0].slot_decay_per_second == 0.0
    set_limit("api", 2, fake, slot_decay_per_second=1.5, namespace="ns")
    set_limit("api", None, fake, namespace="ns")
    assert concurrency_limits(fake, namespace="ns") == []
    assert not fake.exists("{ns}:concurrency-decay")
    fake.hset("{ns}:concurrency-limits", "api", 2)
    fake.hset("{ns}:concurrency-decay", "api", "fast")  # by hand: reads as no decay
    assert concurrency_limits(fake, namespace="ns")[0].slot_decay_per_second == 0.0


def test_max_retries_bounds_the_tries_after_the_first(fake: redis.Redis) -> None:
    set_limit("db", 1, fake, namespace="ns")
    with concurrency("db", client=fake, namespace="ns"):
        for retries in (0, 2):
            with (pytest.raises(ConcurrencyTimeout,
                                match=f"db: 1 slot.* not free after {retries} retries"),
                  concurrency("db", max_retries=retries, client=fake, namespace="ns")):
                pass
    with concurrency("db", max_retries=0, client=fake, namespace="ns"):  # free: first try
        pass
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_retries must be a count"):
            concurrency("db", max_retries=bad)


def test_lease_duration_is_how_long_a_blocks_slots_stay_held_unrenewed(
        fake: redis.Redis) -> None:
    set_limit("db", 1, fake, namespace="ns")
    with concurrency("db", lease_duration=600, client=fake, namespace="ns"):
        [(_, ends)] = fake.zrange("{ns}:concurrency:db", 0, -1, withscores=True)
        seconds, micros = fake.time()
        left = ends - (seconds * 1000 + micros // 1000)
        assert 599_000 <= left <= 600_000  # not BALANCER_CONCURRENCY_LEASE's 30 s
    for bad in (0, 0.1, 86_401, "30"):
        with pytest.raises(ValueError, match=r"lease_duration must be from 0\.3 to 86400"):
            concurrency("db", lease_duration=bad)
