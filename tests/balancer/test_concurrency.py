"""`with concurrency(...)` (balancer/concurrency.py) on fakeredis: a block holds its slots
while it runs, waits for them or times out, and gives them back; the limits' settings."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

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
