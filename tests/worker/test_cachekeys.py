"""A run's cache digest under a Prefect 3 policy or a key function of the task's own,
worked out on the worker (worker/cachekeys.py, worker/caching.py)."""

from __future__ import annotations

import logging

import pytest
from balancer.common import cache, codec
from balancer.common.cache import CACHE_KEYWORD, CacheSpec
from balancer.common.keys import Keys
from balancer.worker import cachekeys, caching

from balancer import runcontext
from balancer.runcontext import RunFacts

FETCH = "tests.integration.cached_tasks:fetch_by_url"
PLAIN = "tests.integration.cached_tasks:plus_one"  # no key function


def _facts(flow_id: str = "f1", params: dict[str, object] | None = None,
           whole: bool = True) -> RunFacts:
    return RunFacts("t1", "fetch_by_url", flow_id, "default", "w1",
                    lambda: {"task_run_count": 2, "task_tags": ["io"]},
                    read_parameters=lambda: (params or {}, whole))


def _spec(*parts: str) -> CacheSpec:
    return CacheSpec(60_000, "k", "policy", ("log", "url", "attempt"), (), parts)


def _digest(parts: tuple[str, ...], args: list[object], facts: RunFacts | None = None,
            path: str = FETCH) -> str | None:
    keyed = cachekeys.digest(_spec(*parts), path, args, {}, facts or _facts())
    return None if keyed is None else keyed[0]


def test_a_key_function_keys_on_what_it_returns_from_the_task_s_parameters() -> None:
    first = _digest(("key_fn",), ["/a.log", "a.com", 1])
    assert first == _digest(("key_fn",), ["/b.log", "a.com", 2])  # only the url counts
    assert first != _digest(("key_fn",), ["/a.log", "b.com", 1])


def test_a_key_function_s_key_labels_the_entry_and_other_parts_leave_no_label() -> None:
    """What `balancer cache ls` shows beside the digest: the key as the function made it."""
    keyed = cachekeys.digest(_spec("key_fn"), FETCH, ["/a.log", "a.com", 1], {}, _facts())
    assert keyed is not None and keyed[1] == "fetch_by_url:a.com"
    keyed = cachekeys.digest(_spec("inputs"), FETCH, ["/a.log", "a.com", 1], {}, _facts())
    assert keyed is not None and keyed[1] == ""


def test_a_key_function_is_given_prefect_s_context() -> None:
    seen = []

    def key(context: cachekeys.KeyContext, parameters: dict[str, object]) -> str:
        run = context.task_run
        seen.append((context.task.name, run.id, run.flow_run_id, run.run_count, run.tags,
                     context.parameters, parameters))
        return "k"

    from tests.integration import cached_tasks

    given = cached_tasks.fetch_by_url.cache_policy.key_fns
    cached_tasks.fetch_by_url.cache_policy.key_fns = (key,)
    try:
        _digest(("key_fn",), ["/a.log", "a.com"])
    finally:
        cached_tasks.fetch_by_url.cache_policy.key_fns = given
    params = {"log": "/a.log", "url": "a.com", "attempt": 0}  # defaults filled in
    assert seen == [("fetch_by_url", "t1", "f1", 2, ["io"], params, params)]


def test_none_from_the_key_function_caches_nothing_unless_another_part_keys() -> None:
    assert _digest(("key_fn",), ["/a.log", "nocache"]) is None
    assert _digest(("inputs", "key_fn"), ["/a.log", "nocache"]) is not None


@pytest.mark.parametrize("url, said", [("boom", "raised RuntimeError: no key for boom")])
def test_a_key_function_that_raises_leaves_the_key_unmade(url: str, said: str) -> None:
    with pytest.raises(cachekeys.KeyUnmade, match=said):
        _digest(("key_fn",), ["/a.log", url])


def test_a_call_naming_a_key_function_its_task_has_not_is_not_keyed() -> None:
    with pytest.raises(cachekeys.KeyUnmade, match="has none"):
        _digest(("key_fn",), [1], path=PLAIN)


def test_inputs_left_out_run_id_and_source_each_change_the_digest_as_they_should() -> None:
    parts = ("inputs", "-input:log", "run_id", "task_source")
    base = _digest(parts, ["/a.log", "a.com"])
    assert base == _digest(parts, ["/other.log", "a.com"])  # log left out
    assert base != _digest(parts, ["/a.log", "b.com"])
    assert base != _digest(parts, ["/a.log", "a.com"], _facts(flow_id="f2"))
    assert base != _digest(parts, ["/a.log", "a.com"], path=PLAIN)  # other source
    assert cachekeys.source_digest(FETCH) == cachekeys.source_digest(FETCH)


def test_flow_parameters_key_the_run_and_a_run_that_kept_only_some_is_not_cached() -> None:
    day = _digest(("flow_parameters",), [], _facts(params={"day": "mon", "n": 1}))
    assert day != _digest(("flow_parameters",), [], _facts(params={"day": "tue", "n": 1}))
    some = ("flow_parameter:day",)
    assert (_digest(some, [], _facts(params={"day": "mon", "n": 1}))
            == _digest(some, [], _facts(params={"day": "mon", "n": 2})))
    with pytest.raises(cachekeys.KeyUnmade, match="could not keep them all"):
        _digest(("flow_parameters",), [], _facts(params={"day": "mon"}, whole=False))


def test_prepare_runs_a_task_uncached_and_says_why_when_its_key_cannot_be_made(
        caplog: pytest.LogCaptureFixture) -> None:
    def call(url: str) -> bytes:
        return codec.pack([["/a.log", url], {CACHE_KEYWORD: _spec("key_fn").to_list()}])

    keys = Keys("ns")
    with runcontext.bound(_facts()), caplog.at_level(logging.WARNING):
        stripped, prepared = caching.prepare(keys, "t1", FETCH, call("a.com"), 10_000)
        assert prepared is not None and prepared.ttl_ms == 60_000
        assert codec.unpack(stripped) == [["/a.log", "a.com"], {}]
        assert caching.prepare(keys, "t1", FETCH, call("nocache"), 10_000)[1] is None
        assert caching.prepare(keys, "t1", FETCH, call("boom"), 10_000)[1] is None
    assert "task=t1: no cache key (its cache key function" in caplog.text
    run_keyed = codec.pack([["/a.log", "a.com"], {
        CACHE_KEYWORD: CacheSpec(60_000, "k", "policy", (), (), ("run_id",)).to_list()}])
    with runcontext.bound(_facts()):
        prepared = caching.prepare(keys, "t1", FETCH, run_keyed, 10_000)[1]
    assert prepared is not None and prepared.ttl_ms == 10_000  # no longer than the run
    assert cache.marked(run_keyed)
