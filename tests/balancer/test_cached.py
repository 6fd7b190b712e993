"""Cached results as `balancer cache` lists and deletes them, from each partition's index
(fakeredis: what the worker stores, what expired, what someone else wrote)."""

from __future__ import annotations

import redis
from balancer.common import cache, codec
from balancer.common.cache import CacheSpec
from balancer.common.keys import Keys
from balancer.worker import caching

from balancer import cached

KEYS = Keys("t")
NOW = 1_800_000_000_000  # Redis's clock, in ms


def _store(client: redis.Redis, x: int, ttl_ms: int, now: int = NOW,
           label: str = "") -> caching.Prepared:
    spec = CacheSpec(ttl_ms, "m:f#f", "all_inputs", ("x",))
    blob = codec.pack([[x], {cache.CACHE_KEYWORD: spec.to_list()}])
    _, prepared = caching.prepare(KEYS, "t1", "m:f", blob, 1000)
    assert prepared is not None
    prepared = caching.Prepared(prepared.spec, prepared.args, prepared.key, prepared.digest,
                                prepared.ttl_ms, label)
    caching.store(client, None, KEYS, prepared, codec.pack(x * x), "task", now)
    return prepared


def test_each_stored_result_is_listed_soonest_to_expire_first_with_its_label(
        fake: redis.Redis) -> None:
    later = _store(fake, 1, 60_000, label="reports/eu/mon")
    sooner = _store(fake, 2, 30_000)
    rows = cached.listed(fake, KEYS, NOW)
    assert [(r.key, r.digest, r.label, r.expires_ms) for r in rows] == [
        ("m:f#f", sooner.digest, "", NOW + 30_000),
        ("m:f#f", later.digest, "reports/eu/mon", NOW + 60_000)]
    assert all(r.size == fake.strlen(p.key) for r, p in zip(rows, (sooner, later)))
    assert rows[1].matches("reports/*") and rows[0].matches("m:f*")
    assert not rows[0].matches("reports/*")


def test_an_expired_result_is_not_listed_and_the_next_store_drops_its_member(
        fake: redis.Redis) -> None:
    _store(fake, 1, 1_000)
    assert cached.listed(fake, KEYS, NOW + 1_000) == []
    _store(fake, 2, 60_000, now=NOW + 2_000)
    assert fake.zcard(KEYS.cache_index) == 1


def test_a_forgotten_result_is_deleted_with_its_member_and_the_others_stay(
        fake: redis.Redis) -> None:
    one, two = _store(fake, 1, 60_000), _store(fake, 2, 60_000)
    rows = cached.listed(fake, KEYS, NOW)
    assert cached.forget(fake, KEYS, [r for r in rows if r.digest == one.digest]) == 1
    assert fake.get(one.key) is None and fake.get(two.key) is not None
    assert [r.digest for r in cached.listed(fake, KEYS, NOW)] == [two.digest]
    assert cached.forget(fake, KEYS, []) == 0


def test_an_index_member_someone_else_wrote_is_left_out_of_the_list(
        fake: redis.Redis) -> None:
    _store(fake, 1, 60_000)
    fake.zadd(KEYS.cache_index, {b"\xff not msgpack": NOW + 5_000,
                                 codec.pack([1, 2, 3]): NOW + 5_000})
    assert [r.key for r in cached.listed(fake, KEYS, NOW)] == ["m:f#f"]


def test_a_label_is_kept_to_its_limit() -> None:
    key, digest, label = cache.from_index(cache.index_member("k", "d", "x" * 500))
    assert (key, digest, len(label)) == ("k", "d", cache.PART_LIMIT)
