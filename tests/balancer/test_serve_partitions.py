"""balancer.serve_partitions: a serve's loops lead at most its share of the partitions,
give up what is past it, and take what lapsed."""

from __future__ import annotations

import redis
from balancer.common.settings import Settings

from balancer.serve_partitions import PartitionedServe


def _serve(fake: redis.Redis, live: int) -> PartitionedServe:
    serve = PartitionedServe(fake, Settings(namespace="ns"), 3)
    serve.live = live
    return serve


def test_one_loop_per_partition_each_on_its_own_keys_under_one_dispatcher_id(
        fake: redis.Redis) -> None:
    serve = _serve(fake, 1)
    assert [loop.partition for loop in serve.loops] == [0, 1, 2]
    assert [loop.keys.leader for loop in serve.loops] == [
        "{ns}:leader", "{ns:1}:leader", "{ns:2}:leader"]
    assert {loop.id for loop in serve.loops} == {serve.id}


def test_loops_take_free_partitions_up_to_the_share_and_no_further(fake: redis.Redis) -> None:
    serve = _serve(fake, 2)
    for p in (0, 1):
        assert serve.may_lead(p, leading=False)
        serve.led(p, leading=True)
    assert not serve.may_lead(2, leading=False)
    assert serve.leading() == {0, 1}


def test_a_take_in_progress_counts_against_the_share(fake: redis.Redis) -> None:
    serve = _serve(fake, 2)
    assert serve.may_lead(0, leading=False)
    assert serve.may_lead(1, leading=False)  # both trying at once
    assert not serve.may_lead(2, leading=False)
    serve.led(1, leading=False)  # another dispatcher held it
    assert serve.may_lead(2, leading=False)


def test_a_dispatcher_joining_makes_the_others_give_up_their_highest_partition(
        fake: redis.Redis) -> None:
    serve = _serve(fake, 1)
    for p in range(3):
        assert serve.may_lead(p, leading=False)
        serve.led(p, leading=True)
    serve.live = 2
    assert serve.may_lead(0, leading=True)
    assert not serve.may_lead(2, leading=True)  # resigned
    assert serve.may_lead(1, leading=True)
    assert serve.leading() == {0, 1}
    assert not serve.may_lead(2, leading=False)  # and does not take it back


def test_a_lease_lost_frees_its_place_in_the_share(fake: redis.Redis) -> None:
    serve = _serve(fake, 2)
    for p in (0, 1):
        serve.may_lead(p, leading=False)
        serve.led(p, leading=True)
    serve.led(1, leading=False)  # lost (an outage, another took it)
    assert serve.may_lead(2, leading=False)
