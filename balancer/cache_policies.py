"""Prefect 3's ``prefect.cache_policies``: what a cached result is keyed on.

    @task(cache_policy=INPUTS + TASK_SOURCE, cache_expiration=timedelta(days=1))
    @task(cache_policy=DEFAULT - "verbose")
    @task(cache_key_fn=by_url)           # Prefect 2's: by_url(context, parameters) -> str

A policy is made of parts, combined with ``+`` (a result is reused by a run for which
every part gives the same key) and ``-`` (an input left out of ``INPUTS``):

- ``INPUTS`` (``Inputs(exclude=[...])``): the task's arguments, upstream results included;
- ``TASK_SOURCE``: the task's source code, as the worker running it has it (a run of
  changed code does not reuse its old results);
- ``RUN_ID``: the flow run (results are reused within one run, never across runs);
- ``FLOW_PARAMETERS``: the flow run's parameters (as its record keeps them);
- a key function of your own (``cache_key_fn=fn``, ``CacheKeyFnPolicy(fn)``,
  ``CachePolicy.from_cache_key_fn(fn)``): ``fn(context, parameters)`` returns the key, or
  None to cache nothing;
- ``DEFAULT`` is ``INPUTS + TASK_SOURCE + RUN_ID``, as Prefect 3's; ``NONE`` (``NO_CACHE``)
  caches nothing.

Every part is worked out on the worker, before the run (worker/cachekeys.py). The parts a
policy names travel with each call, as data, signed with it (common/cache.py); a key
function is code, so it does not travel: the worker calls the one its task's module
defines (as it calls its hooks), and a task's copy (``with_options``) cannot bring one of
its own. ``cache_policy=INPUTS`` alone is Prefect 1's ``all_inputs`` (balancer/caching.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from balancer.common.cache import (
    EXCLUDED_INPUT,
    INPUTS_PART,
    KEY_FN_PART,
    PARAMETERS_PART,
    RUN_ID_PART,
    SOURCE_PART,
)


class CachePolicy:
    """A set of parts: the inputs left out of ``INPUTS``, and key functions."""

    def __init__(self, parts: Iterable[str] = (), exclude: Iterable[str] = (),
                 key_fns: Iterable[Callable[..., Any]] = (), name: str = "") -> None:
        self.parts = tuple(dict.fromkeys(parts))
        self.exclude = tuple(dict.fromkeys(exclude))
        self.key_fns = tuple(dict.fromkeys(key_fns))
        for fn in self.key_fns:
            if not callable(fn):
                raise TypeError(f"a cache key function must be a function"
                                f" fn(context, parameters) -> str, got {type(fn).__name__}")
        for excluded in self.exclude:
            if not isinstance(excluded, str) or not excluded:
                raise TypeError(f"Inputs(exclude=...) names arguments, got {excluded!r}")
        self.name = name

    @classmethod
    def from_cache_key_fn(cls, cache_key_fn: Callable[..., Any]) -> CachePolicy:
        """Prefect's ``CachePolicy.from_cache_key_fn``: a policy keyed by ``fn``."""
        return CacheKeyFnPolicy(cache_key_fn)

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return CachePolicy((*self.parts, *other.parts), (*self.exclude, *other.exclude),
                           (*self.key_fns, *other.key_fns))

    def __sub__(self, name: str) -> CachePolicy:
        """The policy keyed on the inputs but ``name`` (Prefect's ``INPUTS - "x"``; on a
        policy without INPUTS, as Prefect's, it adds them, but ``name``)."""
        if not isinstance(name, str):
            return NotImplemented
        return self + Inputs(exclude=[name])

    def configure(self, **options: Any) -> CachePolicy:
        """Prefect's key storage, isolation level and lock manager are refused: a cached
        result lives in the cluster's Redis, for its ``cache_expiration``."""
        raise ValueError(f"cache policies take no {', '.join(sorted(options)) or 'options'}"
                         " here: cached results live in the cluster's Redis")

    @property
    def caches(self) -> bool:
        return bool(self.parts or self.key_fns)

    def travelling_parts(self) -> tuple[str, ...]:
        """The parts as a task's call carries them: names, and ``-input:NAME`` for each
        input left out (common/cache.py's CacheSpec.parts), in a stable order."""
        parts = set(self.parts)
        if self.key_fns:
            parts.add(KEY_FN_PART)
        excluded = [EXCLUDED_INPUT + name for name in self.exclude] if INPUTS_PART in parts else []
        return (*sorted(parts), *sorted(excluded))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CachePolicy) and set(self.parts) == set(other.parts)
                and set(self.exclude) == set(other.exclude)
                and set(self.key_fns) == set(other.key_fns))

    def __hash__(self) -> int:
        return hash((frozenset(self.parts), frozenset(self.exclude)))

    def __repr__(self) -> str:
        if self.name:
            return self.name
        shown = [p.upper() for p in self.parts]
        shown += [getattr(fn, "__name__", repr(fn)) for fn in self.key_fns]
        minus = "".join(f" - {name!r}" for name in self.exclude)
        return " + ".join(shown or ["NONE"]) + minus


class Inputs(CachePolicy):
    """The task's arguments, but those named in ``exclude``."""

    def __init__(self, exclude: Iterable[str] = ()) -> None:
        if isinstance(exclude, str):
            exclude = [exclude]
        super().__init__([INPUTS_PART], exclude)


class TaskSource(CachePolicy):
    def __init__(self) -> None:
        super().__init__([SOURCE_PART])


class RunId(CachePolicy):
    def __init__(self) -> None:
        super().__init__([RUN_ID_PART])


class FlowParameters(CachePolicy):
    def __init__(self) -> None:
        super().__init__([PARAMETERS_PART])


class CacheKeyFnPolicy(CachePolicy):
    """Keyed by ``cache_key_fn(context, parameters)``: called on the worker before each
    run, with the run's context (``context.task``, ``context.task_run.id``,
    ``.flow_run_id``, ``.run_count``; ``context.parameters``) and the task's arguments by
    name. None from it caches nothing."""

    def __init__(self, cache_key_fn: Callable[..., Any]) -> None:
        from balancer import tasks

        if cache_key_fn is tasks.task_input_hash:  # what it hashes: the inputs
            super().__init__([INPUTS_PART])
        else:
            super().__init__(key_fns=[cache_key_fn])


class CompoundCachePolicy(CachePolicy):
    def __init__(self, policies: Iterable[CachePolicy] = ()) -> None:
        total = CachePolicy()
        for policy in policies:
            total = total + policy
        super().__init__(total.parts, total.exclude, total.key_fns)


INPUTS = CachePolicy([INPUTS_PART], name="INPUTS")
TASK_SOURCE = CachePolicy([SOURCE_PART], name="TASK_SOURCE")
RUN_ID = CachePolicy([RUN_ID_PART], name="RUN_ID")
FLOW_PARAMETERS = CachePolicy([PARAMETERS_PART], name="FLOW_PARAMETERS")
DEFAULT = CachePolicy([INPUTS_PART, SOURCE_PART, RUN_ID_PART], name="DEFAULT")
NONE = CachePolicy(name="NONE")
NO_CACHE = NONE

__all__ = ["DEFAULT", "FLOW_PARAMETERS", "INPUTS", "NONE", "NO_CACHE", "RUN_ID",
           "TASK_SOURCE", "CacheKeyFnPolicy", "CachePolicy", "CompoundCachePolicy",
           "FlowParameters", "Inputs", "RunId", "TaskSource"]
