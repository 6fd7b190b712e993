"""common.partitions: where a flow lives, how many partitions a dispatcher leads, and the
stored partition count."""

from __future__ import annotations

from collections import Counter

import fakeredis
import pytest
import redis
from balancer.common import clusterfacts, partitions
from balancer.common.keys import Keys
from balancer.common.models import new_id


def test_a_flow_id_names_its_partition_and_partition_0_keeps_plain_ids() -> None:
    base = new_id()
    assert partitions.flow_id_in(base, 0) == base
    for p in (0, 1, 2, 15):
        assert partitions.of_flow(partitions.flow_id_in(base, p)) == p


@pytest.mark.parametrize("flow_id", ["abc", "x-p", "a-p01", "-p3", "f-px", "f-p-1", ""])
def test_an_id_without_a_partition_suffix_is_partition_0(flow_id: str) -> None:
    assert partitions.of_flow(flow_id) == 0


def test_flow_keys_are_those_of_its_partition() -> None:
    keys = Keys("ns")
    assert partitions.flow_keys(keys, "f1").prefix == "{ns}:"
    assert partitions.flow_keys(keys, "f1-p2").flow("f1-p2") == "{ns:2}:flow:f1-p2"


def test_placement_spreads_flows_evenly_over_the_partitions() -> None:
    placed = Counter(partitions.place(new_id(), 4) for _ in range(4000))
    assert set(placed) == {0, 1, 2, 3}
    assert min(placed.values()) > 800  # 1000 each expected


def test_one_partition_places_everything_in_partition_0() -> None:
    assert {partitions.place(new_id(), 1) for _ in range(50)} == {0}


@pytest.mark.parametrize(("count", "live", "share"),
                         [(1, 1, 1), (3, 1, 3), (3, 2, 2), (3, 3, 1), (3, 5, 1), (16, 3, 6),
                          (4, 0, 4)])
def test_a_dispatcher_leads_at_most_its_share_rounded_up(count: int, live: int,
                                                         share: int) -> None:
    assert partitions.share(count, live) == share
    assert share * max(1, live) >= count  # together they lead every partition


def test_a_dispatcher_over_its_share_gives_up_its_highest_partitions() -> None:
    assert partitions.to_resign({0, 1, 2}, 3, 2) == {2}
    assert partitions.to_resign({0, 1, 2, 3}, 4, 4) == {1, 2, 3}
    assert partitions.to_resign({0, 2}, 3, 2) == set()
    assert partitions.to_resign(set(), 3, 2) == set()


def test_a_dispatcher_takes_a_free_partition_only_below_its_share() -> None:
    assert partitions.may_take(set(), 3, 2)
    assert partitions.may_take({0}, 3, 2)
    assert not partitions.may_take({0, 1}, 3, 2)
    assert partitions.may_take({0, 1}, 3, 1)  # alone: it takes all


def test_two_dispatchers_sharing_three_partitions_converge_to_two_and_one() -> None:
    """The share rule applied turn by turn: the first leads all three alone; once the
    second runs, the first gives its highest up and the second takes it."""
    a: set[int] = {0, 1, 2}
    b: set[int] = set()
    a -= partitions.to_resign(a, 3, 2)
    for p in range(3):
        if p not in a and partitions.may_take(b, 3, 2):
            b.add(p)
    assert (a, b) == ({0, 1}, {2})
    # b dies: a, alone again, takes what lapsed
    for p in range(3):
        if p not in a and partitions.may_take(a, 3, 1):
            a.add(p)
    assert a == {0, 1, 2}


def test_the_count_is_stored_once_and_another_is_refused(fake: redis.Redis) -> None:
    keys = Keys("ns")
    assert partitions.stored(fake, keys) is None
    partitions.claim(fake, keys, 3)
    partitions.claim(fake, keys, 3)  # the same count: a second serve
    with pytest.raises(partitions.PartitionsError, match=r"has 3 partitions.*asked for 2"):
        partitions.claim(fake, keys, 2)
    assert partitions.stored(fake, keys) == 3


def test_a_cluster_without_a_stored_count_has_one_partition(fake: redis.Redis) -> None:
    assert partitions.count(fake, Keys("fresh")) == 1


def test_the_count_is_read_from_partition_0_and_cached(fake: redis.Redis) -> None:
    keys = Keys("cached")
    fake.set(keys.partitions, 4)
    assert partitions.count(fake, keys.of(2)) == 4
    fake.set(keys.partitions, 5)
    assert partitions.count(fake, keys) == 4  # within CACHE_FOR


def test_a_count_that_is_no_number_is_an_error(fake: redis.Redis) -> None:
    keys = Keys("broken")
    fake.set(keys.partitions, "many")
    with pytest.raises(partitions.PartitionsError, match="not a partition count"):
        partitions.stored(fake, keys)


def test_a_known_count_stands_while_partition_0_does_not_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition 0's master failing over must not stop submits to the other partitions:
    a count once read is kept (counts never change under flows); never read, it raises."""
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    keys = Keys("failing")
    client.set(keys.partitions, 3)
    assert partitions.count(client, keys) == 3
    monkeypatch.setattr(clusterfacts, "CACHE_FOR", 0.0)  # due to be read again
    server.connected = False
    assert partitions.count(client, keys.of(1)) == 3
    with pytest.raises(redis.ConnectionError):
        partitions.count(client, Keys("never-read"))
