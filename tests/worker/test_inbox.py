"""Idle slots fetching from the worker's inbox themselves, on a real Redis: one slot fetches
at a time, never more entries than slots wait, and closing ends a blocked fetch."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.scripts import TAKE_ONE_LEASES
from balancer.common.signals import Lease
from balancer.worker.inbox import Inbox

from tests.conftest import wait_for


def entry(task_id: str) -> bytes:
    """An inbox entry as assign.lua writes it: id|token| then length-prefixed fields."""
    fields = [b"q", b"f", b"", b"tests.tasks:fn", b"fn", b"", b"args"]
    return f"{task_id}|1.1.1|".encode() + b"".join(b"%d:%s" % (len(f), f) for f in fields)


def lease(client: redis.Redis, namespace: str, *task_ids: str) -> None:
    """Put leases in the inbox of worker "w" as the dispatcher does: the entry and the
    lease it holds."""
    keys = Keys(namespace)
    client.sadd(keys.leases("w"), *(f"{t}|1.1.1" for t in task_ids))
    client.rpush(keys.inbox("w"), *(entry(t) for t in task_ids))


class Slots:
    """Threads standing for idle slots: each takes one lease from the inbox, then stops."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.got: list[Lease | None] = []
        self.threads: list[threading.Thread] = []

    def start(self, n: int) -> None:
        for _ in range(n):
            thread = threading.Thread(target=lambda: self.got.append(self.inbox.next()),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self, timeout: float = 10.0) -> None:
        for thread in self.threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self.threads)


@pytest.fixture
def inbox(real: redis.Redis, namespace: str) -> Iterator[tuple[Inbox, threading.Event, str]]:
    stopping = threading.Event()
    taken: list[Lease] = []
    box = Inbox("w", real, Keys(namespace), taken.append, stopping)
    yield box, stopping, Keys(namespace).inbox("w")
    stopping.set()
    box.close(timeout=1.0)


def test_waiting_slots_each_get_one_lease_and_the_rest_stays_in_redis(
        real: redis.Redis, namespace: str, inbox: tuple[Inbox, threading.Event, str]) -> None:
    box, _, key = inbox
    slots = Slots(box)
    slots.start(3)
    lease(real, namespace, *(f"t{i}" for i in range(5)))
    slots.join()
    got = sorted(lease.task_id for lease in slots.got if lease is not None)
    assert len(got) == 3 and len(set(got)) == 3
    assert real.llen(key) == 2  # prefetched for no free slot: still visible, still in Redis


def test_a_lease_taken_with_an_ack_goes_to_the_next_slot_without_a_fetch(
        inbox: tuple[Inbox, threading.Event, str]) -> None:
    box = inbox[0]
    assert [lease.task_id for lease in box.deliver([entry("a")])] == ["a"]
    assert box.has_ready()
    lease = box.next()
    assert lease is not None and lease.task_id == "a"
    assert not box.has_ready()


def test_closing_ends_a_blocked_fetch_and_no_slot_fetches_after(
        real: redis.Redis, inbox: tuple[Inbox, threading.Event, str]) -> None:
    box, stopping, key = inbox
    slots = Slots(box)
    slots.start(1)
    wait_for(lambda: box._turn.locked())  # the slot blocks in BLMPOP (for up to 4 s)
    stopping.set()
    box.close()  # returns once the blocked fetch has ended
    slots.join(timeout=2.0)
    assert slots.got == [None]
    real.rpush(key, entry("late"))
    assert box.next() is None
    assert real.llen(key) >= 1  # left for the hand-back


def blocked(client: redis.Redis, name: str) -> bool:
    """Whether the connection named ``name`` waits in a blocking command."""
    return any(c.get("name") == name and "b" in c.get("flags", "")
               for c in client.client_list())


def test_closing_one_of_several_pool_children_ends_its_own_blocked_fetch(
        real: redis.Redis, namespace: str, redis_url: str) -> None:
    """Pool children block on one inbox, each on its own connection. Redis hands a pushed
    entry to the connection blocked longest: a single sentinel from the child that stops
    went to a sibling blocked before it (which fetched again), and the stopping child sat
    in its BLMOVE until the block ended (30 s), holding up the worker's shutdown."""
    keys = Keys(namespace)
    children = []
    for role in ("sibling", "stopping"):
        stopping = threading.Event()
        client = redis.Redis.from_url(redis_url, client_name=f"{namespace}-{role}")
        children.append((Inbox("w", client, keys, lambda _: None, stopping, fetchers=2),
                         stopping, client))
    (first, _, _), (last, last_stopping, _) = children
    sibling, stopping_one = Slots(first), Slots(last)
    sibling.start(1)
    wait_for(lambda: blocked(real, f"{namespace}-sibling"))  # it blocks first
    stopping_one.start(1)
    wait_for(lambda: blocked(real, f"{namespace}-stopping"))
    try:
        last_stopping.set()
        last.close(timeout=0)
        stopping_one.join(timeout=10.0)  # ended well before the 30 s block
        assert stopping_one.got == [None]
        lease(real, namespace, "t1")  # the sibling still fetches, and gets it
        sibling.join()
        assert [lease.task_id for lease in sibling.got if lease] == ["t1"]
    finally:
        for box, stopping, client in children:
            if not stopping.is_set():
                stopping.set()
                box.close(timeout=1.0)
            client.close()


def test_an_inbox_entry_without_its_lease_is_dropped_and_never_run(
        real: redis.Redis, namespace: str, inbox: tuple[Inbox, threading.Event, str],
        caplog: pytest.LogCaptureFixture) -> None:
    box, _, key = inbox
    real.rpush(key, entry("forged"))  # pushed by anyone who can write to Redis: no lease
    lease(real, namespace, "real")
    slots = Slots(box)
    slots.start(1)
    slots.join()
    assert [lease.task_id for lease in slots.got if lease is not None] == ["real"]
    assert real.llen(key) == 0
    assert "dropped an inbox entry that holds no lease" in caplog.text and "forged" in caplog.text


def test_an_entry_without_its_lease_arriving_at_a_blocked_fetch_is_dropped(
        real: redis.Redis, namespace: str, inbox: tuple[Inbox, threading.Event, str],
        caplog: pytest.LogCaptureFixture) -> None:
    box, _, key = inbox
    slots = Slots(box)
    slots.start(1)
    wait_for(lambda: box._turn.locked())  # blocked in BLMPOP on the empty inbox
    real.rpush(key, entry("forged"))
    wait_for(lambda: "forged" in caplog.text)
    lease(real, namespace, "real")
    slots.join()
    assert [lease.task_id for lease in slots.got if lease is not None] == ["real"]


def test_an_entry_a_failed_fetch_left_in_fetched_is_taken_before_the_next_block(
        inbox: tuple[Inbox, threading.Event, str], real: redis.Redis, namespace: str) -> None:
    """A connection lost between the blocking move and the script that checks it leaves the
    entry in fetched:<worker>; the next fetch takes it at once instead of blocking on an
    empty inbox."""
    box, _, _ = inbox
    keys = Keys(namespace)
    real.sadd(keys.leases("w"), "t1|1.1.1")
    real.rpush(keys.fetched("w"), entry("t1"))
    box.block = 30.0  # were it to block, the test would wait for the whole block
    box._unchecked = True  # as a failed fetch leaves it
    slots = Slots(box)
    slots.start(1)
    slots.join(timeout=10.0)
    [got] = slots.got
    assert got is not None and got.task_id == "t1"
    assert real.llen(keys.fetched("w")) == 0


def test_a_fetch_takes_entries_left_waiting_without_blocking_and_blocks_once_none_wait(
        real: redis.Redis, namespace: str, inbox: tuple[Inbox, threading.Event, str]) -> None:
    box = inbox[0]
    calls: list[str] = []
    fetch, take = box.direct.calls, box.scripts.take_counted
    box.direct.calls = lambda *a: (calls.append(a[0][0]), fetch(*a))[1]  # type: ignore[method-assign]
    box.scripts.take_counted = lambda *a, **k: (calls.append("take"), take(*a, **k))[1]  # type: ignore[method-assign]
    lease(real, namespace, "a", "b", "c")
    assert [box.next().task_id for _ in range(3)] == ["a", "b", "c"]  # type: ignore[union-attr]
    assert calls == ["BLMOVE", "take", "take"]  # one slot: "b" and "c" waited, taken alone
    lease(real, namespace, "d")
    assert (got := box.next()) is not None and got.task_id == "d"
    assert calls == ["BLMOVE", "take", "take", "BLMOVE"]  # none waited: straight to a block
    slots = Slots(box)
    slots.start(1)
    wait_for(lambda: calls[-2:] == ["BLMOVE", "BLMOVE"])  # "d" left none: it blocks again
    lease(real, namespace, "e")
    slots.join()
    assert [g.task_id for g in slots.got if g is not None] == ["e"]


def test_one_entry_is_checked_by_plain_commands_until_the_worker_holds_many_leases(
        real: redis.Redis, namespace: str, inbox: tuple[Inbox, threading.Event, str]) -> None:
    """No script call on the way to an idle slot's task: its lease is checked against the
    worker's leases, read with it. Once that read finds many, take.lua checks in Redis."""
    box = inbox[0]
    sent: list[list[str]] = []
    fetch = box.direct.calls
    box.direct.calls = lambda *a: (sent.append([c[0] for c in a]), fetch(*a))[1]  # type: ignore[method-assign]
    lease(real, namespace, "a")
    assert (got := box.next()) is not None and got.task_id == "a"
    assert sent == [["BLMOVE", "LPOP", "SRANDMEMBER", "LLEN"]]
    real.sadd(Keys(namespace).leases("w"),
              *(f"other{i}|1.1.1" for i in range(TAKE_ONE_LEASES)))
    lease(real, namespace, "b")
    assert (got := box.next()) is not None and got.task_id == "b"
    assert sent[-1] == ["BLMOVE", "LPOP", "SRANDMEMBER", "LLEN"]  # it read 65 of 66
    lease(real, namespace, "c")
    assert (got := box.next()) is not None and got.task_id == "c"
    assert sent[-1] == ["BLMOVE", "EVALSHA"]


def test_a_lease_missed_by_a_sample_of_many_is_checked_once_more_and_a_forged_one_dropped(
        real: redis.Redis, namespace: str, inbox: tuple[Inbox, threading.Event, str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A worker holding more leases than a fetch reads gets a sample of them: an entry the
    sample does not hold is run only if SISMEMBER finds its lease. The read stays bounded
    however many leases a Redis writer adds."""
    box = inbox[0]
    keys = Keys(namespace)
    others = [f"other{i}|1.1.1".encode() for i in range(TAKE_ONE_LEASES + 1)]
    real.sadd(keys.leases("w"), *others, b"held|1.1.1")
    sample = others  # as SRANDMEMBER returned them: neither "held" nor "forged"
    assert box.scripts.taken_one("w", [entry("held"), sample, 0]) == (
        [entry("held")], 0, True)
    assert box.scripts.taken_one("w", [entry("forged"), sample, 2]) == (
        [], 2, True)
    assert "forged" in caplog.text
    few = others[:3]  # the whole set, when it holds no more than the read asks for
    assert box.scripts.taken_one("w", [entry("held"), few, 0]) == (
        [], 0, False)
