"""The client's side of Prefect 1's task options ``cache_for``/``cache_key``/
``cache_validator``, ``nout``, ``checkpoint`` and ``tags``: checked at decoration, and the
cache options packed with the task's call (common/cache.py; worker/caching.py uses them).

- ``cache_for``: a run's result is stored for that long, under ``cache_key`` (default: the
  task's import path and name) and the inputs' digest the validator compares; a later run,
  in any flow run, whose validator accepts it completes with it without running. Prefect
  2/3's ``cache_key_fn=task_input_hash``, ``cache_policy`` and ``cache_expiration`` are
  taken as these (``from_prefect_2``).
- ``nout``: a reference unpacks into that many references (``a, b = t()``).
- ``checkpoint``: accepted and ignored: every result is stored in its task's record.
- ``tags``: stored on the task's record, shown by ``balancer flow``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any

from balancer.common.cache import MAX_TTL_MS, VALIDATORS, CacheSpec
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
    if task.cache_for is None and (task.cache_key is not None
                                   or task.cache_validator is not None):
        warnings.warn(f"{owner}: cache_key/cache_validator without cache_for: this task"
                      " will not be cached (as in Prefect 1)", UserWarning, stacklevel=4)
    if task.nout is not None:
        integer(owner, "nout", task.nout, 1, 1000)
    if task.checkpoint is not None and not isinstance(task.checkpoint, bool):
        raise ValueError(f"{owner}: checkpoint must be True or False, got {task.checkpoint!r}")


def _validator(task: Task) -> tuple[str, tuple[str, ...]]:
    given = task.cache_validator
    if given is None:
        return "duration_only", ()  # Prefect 1's default
    if isinstance(given, Validator):
        return given.name, given.validate_on
    if isinstance(given, str) and given in VALIDATORS and given != "partial_inputs_only":
        return given, ()
    raise ValueError(f"task {task.name!r}: cache_validator must be one of"
                     " balancer.engine.cache_validators' duration_only, all_inputs,"
                     " never_use or partial_inputs_only([...]), got"
                     f" {getattr(given, '__name__', given)!r} (validators on flow parameters"
                     " are not supported: workers do not see them)")


def from_prefect_2(owner: str, cache_key_fn: Any, cache_policy: Any, cache_expiration: Any,
                   cache_for: Any, cache_validator: Any) -> tuple[Any, Any]:
    """Prefect 2/3's caching options as Prefect 1's (``cache_for``, ``cache_validator``):
    ``cache_key_fn=task_input_hash`` or ``cache_policy=INPUTS`` is ``all_inputs``, kept for
    ``cache_expiration`` (default: as long as an entry may live); ``NONE`` caches nothing.
    Anything else is refused here, at decoration."""
    from balancer import cache_policies, tasks
    from balancer.engine.cache_validators import all_inputs

    if cache_key_fn is None and cache_policy is None:
        if cache_expiration is not None:
            raise ValueError(f"{owner}: cache_expiration without cache_key_fn or cache_policy"
                             " caches nothing; give cache_key_fn=task_input_hash")
        return cache_for, cache_validator
    if cache_for is not None or cache_validator is not None:
        raise ValueError(f"{owner}: give Prefect 1's cache_for/cache_validator or Prefect"
                         " 2/3's cache_key_fn/cache_policy, not both")
    if cache_key_fn is not None and cache_policy is not None:
        raise ValueError(f"{owner}: give cache_key_fn or cache_policy, not both")
    if cache_policy is cache_policies.NONE:
        return None, None
    if cache_key_fn is not tasks.task_input_hash and cache_policy is not cache_policies.INPUTS:
        given = getattr(cache_key_fn or cache_policy, "__name__", cache_key_fn or cache_policy)
        raise ValueError(
            f"{owner}: only cache_key_fn=balancer.tasks.task_input_hash and"
            " cache_policy=INPUTS or NONE (balancer.cache_policies) are supported, got"
            f" {given!r}: a key function of your own would run on the worker unsigned; give"
            " cache_key='name' and cache_validator=partial_inputs_only([...]) to key on some"
            " inputs")
    if cache_expiration is None:
        return MAX_TTL_MS / 1000, all_inputs
    return cache_expiration, all_inputs


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
    validator, validate_on = _validator(task)
    try:
        names = tuple(p.name for p in inspect.signature(task.fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except (TypeError, ValueError):
        names = ()
    key = task.cache_key or f"{task.path}#{task.name}"
    return CacheSpec(max(1, round(task.cache_for * 1000)), key, validator, names, validate_on)
