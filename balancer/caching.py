"""The client's side of Prefect 1's task options ``cache_for``/``cache_key``/
``cache_validator``, ``nout``, ``checkpoint`` and ``tags``: checked at decoration, and the
cache options packed with the task's call (common/cache.py; worker/caching.py uses them).

- ``cache_for``: a run's result is stored for that long, under ``cache_key`` (default: the
  task's import path and name) and the inputs' digest the validator compares; a later run,
  in any flow run, whose validator accepts it completes with it without running. Prefect
  2/3's ``cache_key_fn``, ``cache_policy`` and ``cache_expiration`` are taken as these
  (``from_prefect_2``): a policy (balancer/cache_policies.py) is a validator whose parts
  the worker compares; ``refresh_cache=True`` runs the task whatever the cache holds, and
  stores its result.
- ``nout``: a reference unpacks into that many references (``a, b = t()``).
- ``checkpoint``: accepted and ignored: every result is stored in its task's record.
- ``tags``: stored on the task's record, shown by ``balancer flow``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any

from balancer.common.cache import MAX_TTL_MS, REFRESH, VALIDATORS, CacheSpec
from balancer.engine.cache_validators import Validator
from balancer.options import integer, seconds
from balancer.taglimits import bad_tag

if TYPE_CHECKING:
    from balancer.task import Task

CACHE_KEY_LIMIT = 200  # characters: it is part of a Redis key
TAGS_LIMIT = 32


def check(task: Task) -> None:
    """Raise ValueError naming the task and the option at fault."""
    owner = f"task {task.name!r}"
    if task.cache_for is not None:
        seconds(owner, "cache_for", task.cache_for, positive=True)
        if task.cache_for * 1000 > MAX_TTL_MS:
            raise ValueError(f"{owner}: cache_for is too long, got {task.cache_for!r}")
    key = task.cache_key
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= CACHE_KEY_LIMIT):
        raise ValueError(f"{owner}: cache_key must be a non-empty string of at most"
                         f" {CACHE_KEY_LIMIT} characters, got {key!r}")
    _validator(task)
    if task.refresh_cache is not None and not isinstance(task.refresh_cache, bool):
        raise ValueError(f"{owner}: refresh_cache must be True or False, got"
                         f" {task.refresh_cache!r}")
    if task.cache_for is None and (task.cache_key is not None
                                   or task.cache_validator is not None):
        warnings.warn(f"{owner}: cache_key/cache_validator without cache_for: this task"
                      " will not be cached (as in Prefect 1)", UserWarning, stacklevel=4)
    if task.nout is not None:
        integer(owner, "nout", task.nout, 1, 1000)
    if task.checkpoint is not None and not isinstance(task.checkpoint, bool):
        raise ValueError(f"{owner}: checkpoint must be True or False, got {task.checkpoint!r}")


def _validator(task: Task) -> Validator:
    given = task.cache_validator
    if given is None:
        return Validator("duration_only")  # Prefect 1's default
    if isinstance(given, Validator):
        return given
    if isinstance(given, str) and given in VALIDATORS and given not in (
            "partial_inputs_only", "policy"):
        return Validator(given)
    raise ValueError(f"task {task.name!r}: cache_validator must be one of"
                     " balancer.engine.cache_validators' duration_only, all_inputs,"
                     " never_use, partial_inputs_only([...]), all_parameters or"
                     " partial_parameters_only([...]), got"
                     f" {getattr(given, '__name__', given)!r}")


def from_prefect_2(owner: str, cache_key_fn: Any, cache_policy: Any, cache_expiration: Any,
                   cache_for: Any, cache_validator: Any) -> tuple[Any, Any, Any]:
    """Prefect 2/3's caching options as Prefect 1's (``cache_for``, ``cache_validator``),
    and the policy the task keeps (its key functions, which the worker calls, are read
    from it): ``cache_key_fn=task_input_hash`` or ``cache_policy=INPUTS`` is
    ``all_inputs``; another policy or key function is a ``policy`` validator of its parts;
    either is kept for ``cache_expiration`` (default: as long as an entry may live).
    ``NONE`` caches nothing. What is not a policy is refused here, at decoration."""
    from balancer.cache_policies import INPUTS, CacheKeyFnPolicy, CachePolicy
    from balancer.engine.cache_validators import all_inputs, policy

    if cache_key_fn is None and cache_policy is None:
        if cache_expiration is not None:
            raise ValueError(f"{owner}: cache_expiration without cache_key_fn or cache_policy"
                             " caches nothing; give cache_key_fn=task_input_hash")
        return cache_for, cache_validator, None
    if cache_for is not None or cache_validator is not None:
        raise ValueError(f"{owner}: give Prefect 1's cache_for/cache_validator or Prefect"
                         " 2/3's cache_key_fn/cache_policy, not both")
    if cache_key_fn is not None and cache_policy is not None:
        raise ValueError(f"{owner}: give cache_key_fn or cache_policy, not both")
    if cache_key_fn is not None:
        if not callable(cache_key_fn):
            raise ValueError(f"{owner}: cache_key_fn must be a function fn(context,"
                             f" parameters) -> str, got {type(cache_key_fn).__name__}")
        cache_policy = CacheKeyFnPolicy(cache_key_fn)
    if not isinstance(cache_policy, CachePolicy):
        raise ValueError(f"{owner}: cache_policy must be one of balancer.cache_policies'"
                         " (INPUTS, TASK_SOURCE, RUN_ID, FLOW_PARAMETERS, DEFAULT, NONE,"
                         " combined with + and -), got"
                         f" {getattr(cache_policy, '__name__', cache_policy)!r}")
    if not cache_policy.caches:
        return None, None, cache_policy
    validator = (all_inputs if cache_policy == INPUTS
                 else policy(cache_policy.travelling_parts()))
    if cache_expiration is None:
        return MAX_TTL_MS / 1000, validator, cache_policy
    return cache_expiration, validator, cache_policy


def copied(task: Task, changes: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``task.with_options`` that Prefect 2/3's ``cache_key_fn``,
    ``cache_policy`` and ``cache_expiration`` in ``changes`` (taken out of it) stand for.
    A copy cannot bring a key function of its own: the worker calls those of the task as
    its module defines it, so only theirs may be named again."""
    key_fn, policy_given, expiration = (changes.pop(k, None) for k in (
        "cache_key_fn", "cache_policy", "cache_expiration"))
    owner = f"task {task.name!r}"
    if key_fn is None and policy_given is None:
        if expiration is None:
            return {}
        if task.cache_for is None:
            raise ValueError(f"{owner}: cache_expiration in with_options, and the task is not"
                             " cached: give cache_policy too")
        return {"cache_for": expiration}
    cache_for, validator, policy = from_prefect_2(owner, key_fn, policy_given, expiration,
                                                  None, None)
    own = set(getattr(task.cache_policy, "key_fns", ()))
    foreign = [fn for fn in policy.key_fns if fn not in own]
    if foreign:
        raise ValueError(f"{owner}: with_options cannot bring a cache key function of its own"
                         f" ({getattr(foreign[0], '__qualname__', foreign[0])}): the worker"
                         " calls the task's as its module defines it; define another @task")
    return {"cache_for": cache_for, "cache_validator": validator, "cache_policy": policy}


def tag_list(task: Task) -> list[str]:
    """The task's tags as a sorted list of distinct strings (Prefect 1 takes any
    iterable of strings)."""
    given = task.tags
    if given is None:
        return []
    if isinstance(given, str):
        given = [given]
    try:
        tags = sorted(set(given))
    except TypeError:
        raise ValueError(f"task {task.name!r}: tags must be strings, got {given!r}") from None
    bad = [t for t in tags if bad_tag(t)]
    if bad or len(tags) > TAGS_LIMIT:
        raise ValueError(f"task {task.name!r}: tags must be at most {TAGS_LIMIT} non-empty"
                         f" strings without commas, got {given!r}")
    return tags


def spec(task: Task) -> CacheSpec | None:
    """The cache options a task's call carries; None without cache_for."""
    if task.cache_for is None:
        return None
    validator = _validator(task)
    try:
        names = tuple(p.name for p in inspect.signature(task.fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except (TypeError, ValueError):
        names = ()
    key = task.cache_key or f"{task.path}#{task.name}"
    parts = (*validator.parts, REFRESH) if task.refresh_cache else validator.parts
    return CacheSpec(max(1, round(task.cache_for * 1000)), key, validator.name, names,
                     validator.validate_on, parts)
