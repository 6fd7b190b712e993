"""The worker's cache lookups: what makes an entry a hit, and signed entries."""

from __future__ import annotations

import redis
from balancer.common import cache, codec
from balancer.common.cache import CacheSpec, Entry
from balancer.common.keys import Keys
from balancer.common.signing import signer
from balancer.worker import caching

KEYS = Keys("t")
SPEC = CacheSpec(60_000, "k", "all_inputs", ("x",))
NOW = 1_800_000_000_000  # Redis's clock, in ms


def _prepared(x: int) -> caching.Prepared:
    blob = codec.pack([[x], {cache.CACHE_KEYWORD: SPEC.to_list()}])
    args, prepared = caching.prepare(KEYS, "t1", "m:f", blob, 1000)
    assert prepared is not None and codec.decode_call(args) == ([x], {})
    return prepared


def test_a_call_without_cache_options_is_left_as_it_is() -> None:
    blob = codec.pack([[1], {}])
    assert caching.prepare(KEYS, "t1", "m:f", blob, 1000) == (blob, None)


def test_a_stored_result_is_found_for_the_same_inputs_only(fake: redis.Redis) -> None:
    fake.hset("task", "cached", 1)
    caching.store(fake, None, KEYS, _prepared(1), codec.pack("one"), "task", NOW)
    assert fake.hget("task", "cached") is None
    assert caching.lookup(fake, None, "t2", _prepared(1), NOW) == codec.pack("one")
    assert caching.lookup(fake, None, "t2", _prepared(2), NOW) is None
    assert 0 < fake.pttl(_prepared(1).key) <= 60_000
    # Expiry is on the clock given (Redis's), whatever this host's says.
    assert caching.lookup(fake, None, "t2", _prepared(1), NOW + 59_999) == codec.pack("one")
    assert caching.lookup(fake, None, "t2", _prepared(1), NOW + 60_000) is None


def test_an_entry_past_its_expiry_is_a_miss_even_if_the_key_remains(
        fake: redis.Redis) -> None:
    p = _prepared(1)
    fake.set(p.key, Entry(p.digest, 1, codec.pack("old")).encode())
    assert caching.lookup(fake, None, "t2", p, NOW) is None


def test_with_signing_keys_only_a_signed_entry_is_used(fake: redis.Redis) -> None:
    s = signer("secret-one")
    p = _prepared(1)
    caching.store(fake, s, KEYS, p, codec.pack("signed"), "task", NOW)
    assert caching.lookup(fake, s, "t2", p, NOW) == codec.pack("signed")
    planted = Entry(p.digest, 2**41, codec.pack("planted"), "0" * 64)
    fake.set(p.key, planted.encode())
    assert caching.lookup(fake, s, "t2", p, NOW) is None
    # an entry signed for other inputs, copied under this key, does not verify either
    other = _prepared(2)
    caching.store(fake, s, KEYS, other, codec.pack("for two"), "task", NOW)
    moved = Entry.decode(fake.get(other.key))
    fake.set(p.key, Entry(p.digest, moved.expires_ms, moved.result, moved.sig).encode())
    assert caching.lookup(fake, s, "t2", p, NOW) is None
