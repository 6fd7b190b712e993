"""Cache options, the inputs' digest each validator compares, and cache entries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from balancer.common import cache, codec
from balancer.common.cache import CacheSpec, Entry

from balancer import caching, task
from balancer.engine import cache_validators as cv


def _spec(validator: str, validate_on: tuple[str, ...] = ()) -> CacheSpec:
    return CacheSpec(1000, "k", validator, ("a", "b"), validate_on)


def test_all_inputs_digest_names_inputs_whether_positional_or_keyword() -> None:
    spec = _spec("all_inputs")
    assert cache.digest(spec, [1, 2], {}) == cache.digest(spec, [1], {"b": 2})
    assert cache.digest(spec, [1, 2], {}) == cache.digest(spec, [], {"b": 2, "a": 1})


def test_all_inputs_digest_differs_when_any_input_differs() -> None:
    spec = _spec("all_inputs")
    assert cache.digest(spec, [1, 2], {}) != cache.digest(spec, [1, 3], {})
    assert cache.digest(spec, [1, 2], {}) != cache.digest(spec, [1, 2], {"c": None})
    assert cache.digest(spec, [1], {}) != cache.digest(spec, [1.5], {})


def test_partial_inputs_only_digest_ignores_inputs_not_named() -> None:
    spec = _spec("partial_inputs_only", ("a",))
    assert cache.digest(spec, [1, 2], {}) == cache.digest(spec, [1, 99], {"c": 5})
    assert cache.digest(spec, [1, 2], {}) != cache.digest(spec, [2, 2], {})


def test_duration_only_and_never_use_accept_any_inputs() -> None:
    assert cache.digest(_spec("duration_only"), [1], {}) == cache.ANY_INPUTS
    assert cache.digest(_spec("duration_only"), [2], {"x": 1}) == cache.ANY_INPUTS
    assert not _spec("never_use").used and _spec("all_inputs").used


def test_the_spec_travels_with_the_call_and_is_stripped_before_it() -> None:
    spec = _spec("all_inputs")
    blob = codec.pack([[1], {"b": 2, cache.CACHE_KEYWORD: spec.to_list()}])
    assert cache.marked(blob) and not cache.marked(codec.pack([[1], {"b": 2}]))
    _args, kwargs = codec.decode_call(blob)
    assert cache.take_spec(kwargs) == spec and kwargs == {"b": 2}


def test_a_policy_s_parts_travel_and_a_spec_without_them_keeps_its_old_form() -> None:
    policy = CacheSpec(1000, "k", "policy", ("a",), (), ("inputs", "-input:b", "refresh"))
    assert CacheSpec.from_list(policy.to_list()) == policy and policy.refresh
    assert len(_spec("all_inputs").to_list()) == 5  # read by workers older than policies
    assert CacheSpec.from_list(_spec("all_inputs").to_list()).parts == ()


@pytest.mark.parametrize("raw", [None, [1, "k"], [0, "k", "all_inputs", [], []],
                                 [1000, "k", "exec", [], []], [1000, "", "never_use", [], []],
                                 [1000, "k", "policy", [], []],  # a policy of no parts
                                 [1000, "k", "policy", [], [], ["refresh"]],
                                 [1000, "k", "policy", [], [], ["os.system"]],
                                 [1000, "k", "policy", [], [], ["-input:"]],
                                 [1000, "k", "all_inputs", [], [], ["run_id"]],
                                 [1000, "k", "policy", [], [], ["inputs"], []]])
def test_a_spec_written_by_someone_else_is_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        CacheSpec.from_list(raw)


def test_an_entry_round_trips_and_garbage_is_not_an_entry() -> None:
    entry = Entry("d", 123, codec.pack([1, 2]), "sig")
    assert Entry.decode(entry.encode()) == entry
    for raw in (b"\x80\x04pickle", codec.pack([1, 2]), codec.pack(["d", "x", b"", ""])):
        with pytest.raises(ValueError):
            Entry.decode(raw)


@task(cache_for=timedelta(minutes=2), cache_key="ck")
def keyed(a: int, b: int = 0) -> int:
    return a + b


@task(cache_for=5, cache_validator=cv.partial_inputs_only(["b"]))
def on_b(a: int, b: int = 0) -> int:
    return a


def test_task_options_follow_prefect_1() -> None:
    spec = caching.spec(keyed)
    assert spec == CacheSpec(120_000, "ck", "duration_only", ("a", "b"))  # the default
    spec = caching.spec(on_b)
    assert spec is not None and spec.validator == "partial_inputs_only"
    assert spec.validate_on == ("b",) and spec.key.endswith(":on_b#on_b")
    assert caching.spec(task(_plain)) is None


@pytest.mark.parametrize("options, message", [
    ({"cache_for": -1}, "cache_for must be positive"),
    ({"cache_for": float("nan")}, "cache_for must be a finite number"),
    ({"cache_for": 5, "cache_key": ""}, "cache_key must be a non-empty string"),
    ({"cache_for": 5, "cache_validator": lambda *a: True}, "cache_validator must be one of"),
    ({"nout": 0}, "nout must be between 1"),
    ({"checkpoint": "yes"}, "checkpoint must be True or False"),
    ({"tags": ["a", 3]}, "tags must be"),
])
def test_bad_options_are_refused_at_decoration_naming_the_option(
        options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        task(**options)(_plain)  # type: ignore[call-overload]


def _plain(x: int) -> int:
    return x


def test_cache_options_without_cache_for_warn_as_prefect_1_does() -> None:
    with pytest.warns(UserWarning, match="will not be cached"):
        task(cache_key="k")(_plain)


def test_partial_inputs_only_needs_names() -> None:
    with pytest.raises(ValueError, match="validate_on"):
        cv.partial_inputs_only()


def test_a_reference_without_nout_is_not_iterable() -> None:
    from balancer import Flow

    with Flow("f"), pytest.raises(TypeError, match="give nout=N"):
        _a, _b = keyed(1)


def test_nout_makes_one_reference_per_item() -> None:
    from balancer import Flow

    with Flow("f") as flow:
        a, b = task(nout=2)(_pair)(1)
    assert a is not b and [n.task.name for n in flow.nodes] == ["_pair", "getitem", "getitem"]


def _pair(x: int) -> tuple[int, int]:
    return x, x


def test_prefect_2_caching_options_are_prefect_1s_all_inputs() -> None:
    from balancer.cache_policies import INPUTS, NONE
    from balancer.tasks import task_input_hash

    hashed = task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=5))(
        lambda x: x)
    assert (hashed.cache_for, hashed.cache_validator) == (300.0, cv.all_inputs)
    forever = task(cache_policy=INPUTS)(lambda x: x)
    assert forever.cache_validator == cv.all_inputs
    assert forever.cache_for * 1000 == cache.MAX_TTL_MS
    assert task(cache_policy=NONE)(lambda x: x).cache_for is None


@pytest.mark.parametrize("options, said", [
    ({"cache_key_fn": "by_url"}, "cache_key_fn must be a function"),
    ({"cache_policy": "TASK_SOURCE"}, "cache_policy must be one of balancer.cache_policies'"),
    ({"cache_expiration": 60}, "cache_expiration without cache_key_fn or cache_policy"),
    ({"cache_policy": "x", "cache_for": 5}, "not both")])
def test_prefect_2_caching_it_cannot_honour_is_refused_at_decoration(
        options: dict[str, object], said: str) -> None:
    def fetch(x: int) -> int:
        return x

    with pytest.raises(ValueError, match=f"task 'fetch': .*{said}"):
        task(**options)(fetch)  # type: ignore[call-overload]
