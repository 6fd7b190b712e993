"""Prefect 3's cache policies and Prefect 2's cache_key_fn as a task takes them: the parts
that travel with its calls, what a copy may change, and what is refused at decoration
(balancer/cache_policies.py, balancer/caching.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from balancer import caching, task
from balancer.cache_policies import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NONE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundCachePolicy,
    Inputs,
)
from balancer.engine import cache_validators as cv
from balancer.tasks import task_input_hash


def by_url(context: Any, parameters: dict[str, Any]) -> str:
    return str(parameters["url"])


def other_key(context: Any, parameters: dict[str, Any]) -> str:
    return "other"


@task(cache_key_fn=by_url, cache_expiration=timedelta(hours=1))
def fetch(url: str, verbose: bool = False) -> str:
    return url


def test_policies_combine_with_plus_and_leave_inputs_out_with_minus() -> None:
    assert DEFAULT == INPUTS + TASK_SOURCE + RUN_ID
    assert (DEFAULT - "verbose").travelling_parts() == (
        "inputs", "run_id", "task_source", "-input:verbose")
    assert Inputs(exclude=["a", "b"]) == INPUTS - "a" - "b"
    assert (TASK_SOURCE - "a").travelling_parts() == ("inputs", "task_source", "-input:a")
    assert NONE + RUN_ID == RUN_ID and not NONE.caches
    assert CompoundCachePolicy([INPUTS, FLOW_PARAMETERS]) == INPUTS + FLOW_PARAMETERS
    keyed = CachePolicy.from_cache_key_fn(by_url) + INPUTS
    assert keyed.key_fns == (by_url,) and "key_fn" in keyed.travelling_parts()
    assert CacheKeyFnPolicy(task_input_hash) == INPUTS  # what it hashes
    assert repr(DEFAULT) == "DEFAULT" and repr(INPUTS - "x") == "INPUTS - 'x'"
    with pytest.raises(ValueError, match="key_storage"):
        INPUTS.configure(key_storage="/tmp")


def test_a_key_function_is_a_policy_whose_key_the_worker_makes() -> None:
    assert fetch.cache_for == 3600 and fetch.cache_policy.key_fns == (by_url,)
    spec = caching.spec(fetch)
    assert spec is not None and spec.validator == "policy" and spec.parts == ("key_fn",)
    assert spec.key.endswith(":fetch#fetch") and not spec.refresh


def test_inputs_alone_stays_prefect_1_s_all_inputs_and_others_are_policies() -> None:
    assert task(cache_policy=INPUTS)(_plain).cache_validator is cv.all_inputs
    spec = caching.spec(task(cache_policy=DEFAULT - "b", refresh_cache=True)(_plain))
    assert spec is not None and spec.validator == "policy"
    assert spec.parts == ("inputs", "run_id", "task_source", "-input:b", "refresh")
    assert caching.spec(task(cache_policy=NONE)(_plain)) is None


def test_prefect_1_s_flow_parameter_validators_are_policies_too() -> None:
    spec = caching.spec(task(cache_for=60, cache_validator=cv.all_parameters)(_plain))
    assert spec is not None and (spec.validator, spec.parts) == ("policy", ("flow_parameters",))
    spec = caching.spec(task(cache_for=60, cache_validator=cv.partial_parameters_only(
        ["day"]))(_plain))
    assert spec is not None and spec.parts == ("flow_parameter:day",)
    with pytest.raises(ValueError, match="validate_on"):
        cv.partial_parameters_only("day")


def test_refresh_cache_goes_with_any_validator() -> None:
    spec = caching.spec(task(cache_for=60, refresh_cache=True)(_plain))
    assert spec is not None and spec.validator == "duration_only" and spec.refresh
    with pytest.raises(ValueError, match="refresh_cache must be True or False"):
        task(cache_for=60, refresh_cache="yes")(_plain)  # type: ignore[call-overload]


def test_a_copy_changes_its_policy_and_expiration_but_brings_no_key_function() -> None:
    uncached = fetch.with_options(cache_policy=NONE)
    assert uncached.cache_for is None and caching.spec(uncached) is None
    longer = fetch.with_options(cache_expiration=timedelta(days=1))
    assert longer.cache_for == 86400 and longer.cache_policy == fetch.cache_policy
    again = fetch.with_options(cache_policy=CacheKeyFnPolicy(by_url) + RUN_ID,
                               refresh_cache=True)
    spec = caching.spec(again)
    assert spec is not None and spec.parts == ("key_fn", "run_id", "refresh")
    with pytest.raises(ValueError, match="cannot bring a cache key function of its own"):
        fetch.with_options(cache_key_fn=other_key)
    with pytest.raises(ValueError, match="the task is not cached"):
        task(_plain).with_options(cache_expiration=60)


def _plain(a: int, b: int = 0) -> int:
    return a


def test_a_prefect_1_target_is_a_key_function_of_the_context_and_the_inputs() -> None:
    from balancer.runcontext import RunFacts, bound
    from balancer.targets import Target

    target = Target("{task_name}/{region}/{day}", "task 'load'")
    facts = RunFacts("t1", "load", "f1", "default", "w1",
                     read_parameters=lambda: ({"region": "eu", "day": "not this"}, True))
    with bound(facts):
        assert target(None, {"day": "mon"}) == "load/eu/mon"  # inputs over parameters
    with pytest.raises(ValueError, match="target must be a non-empty template"):
        task(target="")(lambda: None)
    with pytest.raises(ValueError, match="give target or the cache options, not both"):
        task(target="{today}", cache_for=60)(lambda: None)
